"""Cold start of each embedded server alone (rag.procs.EmbeddedServers): ready, first token."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag.config import Config
from rag.errors import ModelError
from rag.models import CallRecord, ChatModel, make_chat_model
from rag.models.embedded import embedded_specs
from rag.procs import EmbeddedServers

COLD_PROMPT = "Say hello."


def _port_or_free(port: int) -> int:
    """``port`` if nothing listens there, else one the system picks (never someone else's)."""
    for wanted in (port, 0):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            try:
                s.bind(("127.0.0.1", wanted))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ModelError("no free TCP port on 127.0.0.1 for a model server", kind="port")


def _first_token_ms(model: ChatModel, since: float) -> float:
    """Milliseconds from ``since`` (time.monotonic) to the first token of a short request."""

    async def go() -> float:
        record = CallRecord(model=model.name)
        async for _ in model.stream(
            [{"role": "user", "content": COLD_PROMPT}], record, max_tokens=8, temperature=0.0
        ):
            return (time.monotonic() - since) * 1000.0
        raise ModelError(f"{model.name} answered the cold-start request with no text", kind="empty")

    return asyncio.run(go())


def start_cold(
    cfg: Config, stack: contextlib.ExitStack, log_dir: Path, progress: Callable[[str], None]
) -> tuple[Config, dict[str, dict[str, Any]]]:
    """Start each embedded server (its configured port if free, else a free one), timing
    start -> ready -> first token.

    Returns the config pointing at the new ports and, per role, ready_ms and cold_start_ms.
    The servers stop when ``stack`` closes.
    """
    e = cfg.models.embedded
    slm_port = _port_or_free(e.slm_port)
    with socket.socket() as held:  # keep the first pick from being picked twice
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", slm_port))
        ports = {"slm": slm_port, "llm": _port_or_free(e.llm_port)}
    e = e.model_copy(update={"slm_port": ports["slm"], "llm_port": ports["llm"]})
    cfg = cfg.model_copy(update={"models": cfg.models.model_copy(update={"embedded": e})})
    cold: dict[str, dict[str, Any]] = {}
    for spec in embedded_specs(cfg):
        t0 = time.monotonic()
        # one role at a time, so each cold start is timed alone; stopped when ``stack`` closes
        stack.enter_context(
            EmbeddedServers(cfg, (spec.role,), reuse=False, progress=progress, log_dir=log_dir)
        )
        ready_ms = (time.monotonic() - t0) * 1000.0
        first_ms = _first_token_ms(make_chat_model(cfg, spec.role), t0)
        cold[spec.role] = {
            "ready_ms": round(ready_ms),
            "cold_start_ms": round(first_ms),
            "port": spec.port,
        }
        progress(f"{spec.role}: cold start {first_ms / 1000:.1f} s (ready {ready_ms / 1000:.1f} s)")
    return cfg, cold
