"""Foundry Local, both ways a user meets it: its service over HTTP, or its SDK in this process.

The SDK is ``foundry-local-sdk`` 2.x (imported as ``foundry_local_sdk``; the 0.x line was
``foundry_local`` and is not used). Its ``FoundryLocalManager`` is a process-wide singleton:
it owns the model catalogs (Microsoft's public one, or ``models.foundry.catalog_url``, and a
local one where folders converted by ``rag models build --foundry`` are registered), loads
models into ONNX Runtime GenAI, and can start an OpenAI-compatible web service in process.

``FoundryLocalModel`` is the ChatModel for ``provider: foundry-local``. On its first call it
picks the runtime (``models.foundry.runtime``), resolves the configured alias (``phi-4-mini``)
to the model id the runtime expects, and reports an unknown alias with the models there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Unpack

from rag.config import PROVIDER_URLS, FoundryConfig, ModelConfig, TimeoutsConfig
from rag.errors import ModelError
from rag.models.base import CallRecord, Message, Sampling
from rag.models.foundry_build import converted_models
from rag.models.openai_compat import OpenAICompatModel
from rag.models.streaming import StreamTally

APP_NAME = "rag-assistant"
SDK_FIX = "install the `foundry` extra: `pip install -e '.[foundry]'` (or `make install`)"
SERVICE_FIX = (
    "start it with `foundry model run <alias>` (or `foundry service start`), or set "
    "FOUNDRY_LOCAL_ENDPOINT / models.<role>.base_url to where it listens"
)
_VARIANT_SUFFIX = re.compile(r"(-instruct)?-[a-z0-9]+-(cpu|gpu|npu)$")
_VERSION = "1"  # the version part of the ids under which converted folders are registered


def sdk_installed() -> bool:
    """True when foundry-local-sdk (2.x) can be imported."""
    return importlib.util.find_spec("foundry_local_sdk") is not None


def _sdk_error(exc: BaseException) -> str:
    """A native SDK error, without the C++ source location prefix."""
    text = str(exc).strip()
    return re.sub(r"^\S+\.(cc|h):\d+ .*?\) ", "", text) or type(exc).__name__


class FoundryRuntime:
    """The SDK's manager for this process: catalogs, converted-model registration, web service."""

    _lock = threading.RLock()
    _current: FoundryRuntime | None = None

    def __init__(self, data_dir: Path, foundry: FoundryConfig) -> None:
        from foundry_local_sdk import Configuration, FoundryLocalManager, LogLevel

        self.data_dir = data_dir
        self.key = (str(foundry.app_dir or data_dir / "foundry"), foundry.catalog_url)
        app_dir = Path(self.key[0]).resolve()
        app_dir.mkdir(parents=True, exist_ok=True)
        config = Configuration(
            app_name=APP_NAME,
            app_data_dir=str(app_dir),
            model_cache_dir=str(app_dir / "cache"),
            logs_dir=str(app_dir / "logs"),
            log_level=LogLevel.ERROR,
            catalog_urls=[(foundry.catalog_url, None)] if foundry.catalog_url else None,
            disable_nonessential_telemetry=True,
        )
        if FoundryLocalManager.instance is not None:  # initialised by someone else: reuse it
            self.manager = FoundryLocalManager.instance
        else:
            FoundryLocalManager.initialize(config)
            assert FoundryLocalManager.instance is not None
            self.manager = FoundryLocalManager.instance
        self.registered: dict[str, str] = {}  # alias -> model id in the local catalog
        self._models: dict[str, Any] = {}

    @classmethod
    def get(cls, data_dir: Path, foundry: FoundryConfig) -> FoundryRuntime:
        """The process's runtime, made on first use (another app dir or catalog: made anew)."""
        if not sdk_installed():
            raise ModelError(
                f"Foundry Local in process needs foundry-local-sdk; {SDK_FIX}", kind="refused"
            )
        key = (str(foundry.app_dir or data_dir / "foundry"), foundry.catalog_url)
        with cls._lock:
            cur = cls._current
            if cur is not None and cur.key != key:
                cur.close()
                cur = None
            if cur is None:
                cur = cls(data_dir, foundry)
                cls._current = cur
            cur.register_converted()
            return cur

    def close(self) -> None:
        """Stop the web service, unload models and release the SDK's manager."""
        with FoundryRuntime._lock:
            if FoundryRuntime._current is self:
                FoundryRuntime._current = None
            self._models.clear()
            self.manager.close()

    def register_converted(self) -> None:
        """Register every folder `rag models build --foundry` made in the SDK's local catalog."""
        from foundry_local_sdk import CatalogType, ModelInfoBuilder

        local = self.manager.get_catalog(CatalogType.LOCAL)
        for name, folder in converted_models(self.data_dir).items():
            if name in self.registered:
                continue
            model_id = f"{name}:{_VERSION}"
            existing = local.get_model_variant(model_id)  # registrations persist in app_dir
            if existing is not None and Path(existing.get_path()) != folder.resolve():
                local.unregister_model(model_id)
                existing = None
            if existing is None:
                with ModelInfoBuilder() as meta:
                    meta.set_string_property("task", "chat-completion")
                    meta.set_string_property("alias", name)
                    meta.set_string_property("display_name", f"{name} (converted by rag)")
                    local.register_model(
                        model_path=folder.resolve(), model_id=model_id, metadata=meta
                    )
            self.registered[name] = model_id

    def available(self) -> list[str]:
        """Aliases in the local catalog and in the public catalog (as far as it can be read)."""
        from foundry_local_sdk import CatalogType

        names: list[str] = []
        for kind in (CatalogType.LOCAL, CatalogType.PUBLIC):
            with contextlib.suppress(Exception):
                names += [m.alias or m.id for m in self.manager.get_catalog(kind).list_models()]
        return sorted(set(names))

    def find(self, alias: str) -> Any:
        """The SDK model for an alias or model id: converted models first, then the catalog."""
        from foundry_local_sdk import CatalogType

        if alias in self._models:
            return self._models[alias]
        for kind in (CatalogType.LOCAL, CatalogType.PUBLIC):
            catalog = self.manager.get_catalog(kind)
            model = catalog.get_model(alias) or catalog.get_model_variant(alias)
            if model is not None:
                self._models[alias] = model
                return model
        shown = ", ".join(self.available()) or "none"
        raise ModelError(
            f"Foundry Local has no model {alias!r} (available: {shown}). Check the name with "
            "`foundry model list`, or convert the shipped models with `rag models build --foundry`",
            kind="unknown_model",
        )

    def load(self, alias: str) -> Any:
        """The SDK model for ``alias``, loaded into memory (downloads are never started here)."""
        model = self.find(alias)
        if not model.is_loaded:
            if not model.is_cached:
                raise ModelError(
                    f"Foundry Local model {alias!r} ({model.id}) is not downloaded; run "
                    f"`foundry model download {alias}` first",
                    kind="not_built",
                )
            model.load()
        return model

    def service_url(self) -> str:
        """Start the SDK's web service in this process (once); its OpenAI base URL."""
        if not self.manager.urls:
            self.manager.start_web_service()
        urls = self.manager.urls or []
        if not urls:
            raise ModelError(
                "Foundry Local's web service started but reported no URL", kind="refused"
            )
        return str(urls[0]).rstrip("/") + "/v1"


def discover_service_url() -> str | None:
    """The running Foundry Local service's base URL from `foundry service status`, if any."""
    exe = shutil.which("foundry")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "service", "status"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"https?://[^/\s]+", out)
    return f"{match.group(0)}/v1" if match else None


def served_models(base_url: str, timeout: float = 5.0) -> list[str]:
    """Model ids an OpenAI-compatible server lists at ``/models``; raises ModelError if it is down."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelError(
            f"Foundry Local is not running at `{base_url}` ({reason}); {SERVICE_FIX}",
            kind="refused",
        ) from None
    return [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]


def pick_served_id(alias: str, served: Sequence[str], candidates: Sequence[str] = ()) -> str | None:
    """The id the service expects for ``alias``: exact, a catalog variant, or an id naming it."""
    if alias in served:
        return alias
    for cand in candidates:
        if cand in served:
            return cand
    low = alias.lower()
    for sid in served:
        # Phi-4-mini-instruct-generic-cpu:4 -> phi-4-mini (the catalog's alias)
        name = _VARIANT_SUFFIX.sub("", sid.lower().split(":", 1)[0])
        if name == low:
            return sid
    return None


class FoundryLocalModel:
    """ChatModel for `provider: foundry-local`: the service over HTTP or the SDK in process."""

    def __init__(
        self,
        cfg: ModelConfig,
        foundry: FoundryConfig,
        timeouts: TimeoutsConfig,
        data_dir: Path,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.model
        self.foundry = foundry
        self.timeouts = timeouts
        self.data_dir = data_dir
        self.runtime_kind = self._choose_runtime()
        self.model_id: str | None = None  # what the runtime calls the model, once resolved
        self.base_url: str | None = cfg.base_url.rstrip("/") if cfg.base_url else None
        self._http: OpenAICompatModel | None = None
        self._setup = asyncio.Lock()

    def _choose_runtime(self) -> str:
        kind = self.foundry.runtime
        if kind == "auto":
            kind = "service" if self.cfg.base_url or not sdk_installed() else "in-process"
        return kind

    async def aclose(self) -> None:
        """Close the HTTP client (the SDK's manager lives for the process)."""
        if self._http is not None:
            await self._http.aclose()

    # ---- the service over HTTP ----

    def _resolve_service(self) -> tuple[str, str]:
        """(base URL, model id) for the service; blocking (HTTP, SDK), so run in a thread."""
        runtime: FoundryRuntime | None = None
        base = self.base_url
        if base is None and sdk_installed():
            runtime = FoundryRuntime.get(self.data_dir, self.foundry)
            base = runtime.service_url()
        if base is None:
            base = discover_service_url() or PROVIDER_URLS["foundry-local"]
        self.base_url = base
        served = served_models(base)
        candidates: list[str] = []
        if sdk_installed():
            runtime = runtime or FoundryRuntime.get(self.data_dir, self.foundry)
            with contextlib.suppress(ModelError):
                model = runtime.find(self.name)
                candidates = [model.id, *(v.id for v in model.variants)]
        model_id = pick_served_id(self.name, served, candidates)
        if model_id is None:
            raise ModelError(
                f"Foundry Local at `{base}` serves no model {self.name!r} (it serves: "
                f"{', '.join(served) or 'none'}); load it with `foundry model run {self.name}`",
                kind="unknown_model",
            )
        return base, model_id

    async def _service(self) -> OpenAICompatModel:
        async with self._setup:
            if self._http is None:
                base, model_id = await asyncio.to_thread(self._resolve_service)
                self.model_id = model_id
                self._http = OpenAICompatModel(self.cfg, base, self.timeouts, model_id=model_id)
            return self._http

    # ---- the SDK in process ----

    def _load(self) -> Any:
        try:
            runtime = FoundryRuntime.get(self.data_dir, self.foundry)
            model = runtime.load(self.name)
        except ModelError:
            raise
        except Exception as exc:  # the SDK raises FoundryLocalException / RuntimeError
            raise ModelError(
                f"Foundry Local could not load {self.name!r}: {_sdk_error(exc)}", kind="refused"
            ) from None
        self.model_id = str(model.id)
        return model

    def _generate(
        self,
        model: Any,
        messages: Sequence[Message],
        options: dict[str, Any],
        emit: Any,
        cancel: threading.Event,
    ) -> None:
        """Run one chat request on a fresh ChatSession, emitting ("text"|"done"|"error", ...)."""
        from foundry_local_sdk import (
            ChatSession,
            MessageItem,
            MessageRole,
            Request,
            RequestOptions,
            SearchOptions,
            TextItem,
            TextItemType,
        )

        roles = {
            "system": MessageRole.SYSTEM,
            "user": MessageRole.USER,
            "assistant": MessageRole.ASSISTANT,
        }
        try:
            with ChatSession(model) as session, Request() as request:
                session.set_options(RequestOptions(search=SearchOptions(**options)))
                session.set_streaming(True)
                role = roles.get
                items = [
                    MessageItem(role(m["role"], MessageRole.USER), m["content"]) for m in messages
                ]
                for message in items:
                    request.add_item(message)
                with session.process_streaming_request(request) as stream:
                    for item in stream:
                        if cancel.is_set():
                            return  # leaving the loop cancels the native request
                        if isinstance(item, TextItem) and item.type == TextItemType.DEFAULT:
                            emit(("text", item.text))
                    with stream.final_response as final:
                        usage = final.get_usage()
                        finish = int(final.finish_reason)
                        emit(("done", (finish, usage.prompt_tokens, usage.completion_tokens)))
        except Exception as exc:
            emit(("error", exc))

    async def _stream_in_process(
        self, messages: Sequence[Message], record: CallRecord, sampling: Sampling
    ) -> AsyncIterator[str]:
        from foundry_local_sdk import FinishReason

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()
        tally = StreamTally(self.name, record, self.timeouts)
        usage: tuple[int, int, int] | None = None

        def emit(event: tuple[str, Any]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        try:
            model = await asyncio.wait_for(
                asyncio.to_thread(self._load), timeout=self.timeouts.first_token_s
            )
            temperature, seed = sampling.get("temperature"), sampling.get("seed")
            options: dict[str, Any] = {
                "max_output_tokens": sampling.get("max_tokens") or self.cfg.max_tokens,
                "temperature": self.cfg.temperature if temperature is None else temperature,
            }
            if seed is not None:
                options["seed"] = seed
            worker = threading.Thread(
                target=self._generate,
                args=(model, messages, options, emit, cancel),
                name=f"foundry-{self.name}",
                daemon=True,
            )
            worker.start()
            while True:
                kind, value = await asyncio.wait_for(queue.get(), timeout=tally.wait_s())
                if kind == "text":
                    tally.add(value)
                    yield value
                elif kind == "done":
                    usage = value
                    break
                else:
                    raise ModelError(
                        f"{self.name}: Foundry Local failed{' mid-answer' if record.text else ''}: "
                        f"{_sdk_error(value)}",
                        kind="cut" if record.text else "refused",
                        partial=record.text,
                    )
        except TimeoutError:
            raise tally.timed_out() from None
        finally:
            cancel.set()  # a caller that stopped reading early stops the generation too
            record.total_ms = tally.elapsed_ms()
            reported: tuple[int, int] | None = None
            if usage is not None:
                finish, prompt_tokens, completion_tokens = usage
                reported = (prompt_tokens, completion_tokens)
                record.finished = finish in (FinishReason.STOP, FinishReason.LENGTH)
            tally.count_tokens(messages, reported)
        tally.check_complete()

    # ---- the ChatModel ----

    async def stream(
        self, messages: Sequence[Message], record: CallRecord, **sampling: Unpack[Sampling]
    ) -> AsyncIterator[str]:
        """Yield content deltas; see ChatModel.stream for the error contract."""
        if self.runtime_kind == "in-process":
            async for piece in self._stream_in_process(messages, record, sampling):
                yield piece
            return
        try:
            http = await self._service()
        except ModelError:
            raise
        except Exception as exc:  # the SDK failed while starting its web service
            raise ModelError(
                f"Foundry Local's service could not start: {_sdk_error(exc)}", kind="refused"
            ) from None
        async for piece in http.stream(messages, record, **sampling):
            yield piece
