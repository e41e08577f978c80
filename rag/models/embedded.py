"""The embedded default: llama.cpp's OpenAI-compatible server, one process per model.

Each model gets its own port so both stay loaded. Servers bind 127.0.0.1 only, log to
<data_dir>/logs/, and are owned through rag.procs: stopped (SIGTERM to the group, then SIGKILL)
when the context manager exits, and killed by the kernel if this process dies (Linux).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rag.config import Config
from rag.errors import ModelError
from rag.models.artifacts import gguf_path
from rag.procs import STOP_TIMEOUT_S, log_tail, spawn, stop_all

Role = Literal["slm", "llm"]


@dataclass(frozen=True)
class ServerSpec:
    role: Role
    alias: str  # the model name requests use
    gguf: Path
    port: int
    n_ctx: int
    n_threads: int
    logits_all: bool = True  # llama-cpp-python's default; logprobs need it
    prompt_lookup: int = 0  # n-gram speculative decoding: tokens drafted per step (0 = off)
    prompt_cache: bool = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def embedded_specs(cfg: Config, roles: Sequence[Role] = ("slm", "llm")) -> list[ServerSpec]:
    """One spec per role in `roles` whose provider is `embedded` (verifies the GGUF files exist)."""
    e = cfg.models.embedded
    specs = []
    for role, mcfg, file, port in (
        ("slm", cfg.models.slm, e.slm_file, e.slm_port),
        ("llm", cfg.models.llm, e.llm_file, e.llm_port),
    ):
        if role in roles and mcfg.provider == "embedded" and mcfg.base_url is None:
            path = gguf_path(file, cfg.data_dir)
            specs.append(
                ServerSpec(
                    role,  # type: ignore[arg-type]
                    mcfg.model, path, port, e.n_ctx, e.n_threads,
                    logits_all=e.slm_logits_all if role == "slm" else e.llm_logits_all,
                    prompt_lookup=e.prompt_lookup_tokens if e.prompt_lookup else 0,
                    prompt_cache=e.prompt_cache,
                )
            )  # fmt: skip
    return specs


def server_tuning_args(spec: ServerSpec) -> list[str]:
    """llama_cpp.server flags for logits_all, prompt-lookup decoding and the prompt cache."""
    args = ["--logits_all", str(spec.logits_all)]
    if spec.prompt_lookup:
        args += ["--draft_model", "prompt-lookup-decoding"]
        args += ["--draft_model_num_pred_tokens", str(spec.prompt_lookup)]
    if spec.prompt_cache:
        args += ["--cache", "True"]
    return args


def probe(base_url: str, timeout: float = 1.0) -> list[str] | None:
    """Model ids served at base_url, or None if nothing answers there."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as resp:
            data = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]


def reachable(base_url: str, timeout: float = 2.0) -> bool:
    """True when an HTTP server answers at base_url (any status: it may want an API key)."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextlib.contextmanager
def serve(
    specs: list[ServerSpec],
    log_dir: Path,
    progress: Callable[[str], None] = print,
    ready_timeout_s: float = 180.0,
    *,
    reuse: bool = True,
    started: list[ServerSpec] | None = None,
    reused: list[ServerSpec] | None = None,
    stop_timeout_s: float = STOP_TIMEOUT_S,
) -> Iterator[list[ServerSpec]]:
    """Start a llama.cpp server per spec, wait until each answers, stop them all on exit.

    A server already serving the spec's alias on its port is reused (and left running) unless
    `reuse` is False. The specs started and reused are appended to `started` and `reused`.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[ServerSpec, subprocess.Popen[bytes], Path]] = []
    started = [] if started is None else started
    reused = [] if reused is None else reused
    try:
        for spec in specs:
            mine = next((s for s, _p, _l in procs if s.port == spec.port), None)
            if mine is not None and mine.alias == spec.alias:
                started.append(spec)  # both roles on one port and model: one server
                continue
            served = probe(spec.base_url, timeout=5.0)  # a busy server answers slowly
            if served is not None:
                if spec.alias in served and reuse:
                    progress(
                        f"{spec.role}: {spec.alias} already served at {spec.base_url}; reusing it"
                    )
                    reused.append(spec)
                    continue
                raise ModelError(
                    f"port {spec.port} is taken by another server (serving {served}); "
                    f"free it or set models.embedded.{spec.role}_port in rag.yaml",
                    kind="port",
                )
            log = log_dir / f"llama-{spec.role}.log"
            cmd = [
                # llama_cpp.server plus usage and timings at the end of each stream
                sys.executable, "-m", "rag.models.llama_cpp_server",
                "--model", str(spec.gguf), "--model_alias", spec.alias,
                "--host", "127.0.0.1", "--port", str(spec.port),
                "--n_ctx", str(spec.n_ctx), "--n_threads", str(spec.n_threads),
                # By default a new request cuts the stream in flight: with two chat users the
                # first answer would break off. Queue them instead.
                "--interrupt_requests", "False",
                *server_tuning_args(spec),
            ]  # fmt: skip
            progress(f"{spec.role}: starting llama.cpp server for {spec.alias} on {spec.base_url}")
            procs.append((spec, spawn(cmd, log=log), log))
            started.append(spec)
        for spec, proc, log in procs:
            deadline = time.monotonic() + ready_timeout_s
            while probe(spec.base_url) is None:
                if proc.poll() is not None:
                    raise ModelError(
                        f"the llama.cpp server for {spec.alias} exited with code {proc.returncode}; "
                        f"last log lines ({log}):\n{log_tail(log, 15)}",
                        kind="start",
                    )
                if time.monotonic() > deadline:
                    raise ModelError(
                        f"the llama.cpp server for {spec.alias} did not answer within "
                        f"{ready_timeout_s:.0f} s; see {log}",
                        kind="start",
                    )
                time.sleep(0.3)
            progress(f"{spec.role}: {spec.alias} ready")
        yield specs
    finally:
        if procs:
            progress(
                "stopping the llama.cpp server(s) started for this command: "
                + ", ".join(f"{s.alias} ({s.base_url})" for s, _p, _l in procs)
            )
        stop_all([proc for _s, proc, _l in procs], stop_timeout_s)
