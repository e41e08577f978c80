"""The benchmark: warm-up, a baseline session alone, then every session at once."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from rag.errors import ConfigError, RagError
from rag.measure.load.client import Progress, run_sessions
from rag.measure.load.servers import running_app
from rag.measure.load.verdict import _pct, analyse
from rag.procs import log_tail


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 1)


def bench_load(
    sessions: int,
    questions: int,
    *,
    token_delay_s: float = 0.02,
    port: int | None = None,
    progress: Progress = lambda _m: None,
) -> dict[str, Any]:
    """Errors, cross-talk and added latency of `sessions` concurrent chats of `questions` each."""
    if sessions < 1 or questions < 1:
        raise ConfigError(
            f"--sessions and --questions must be at least 1, got {sessions} and {questions}"
        )
    if token_delay_s < 0:
        raise ConfigError(f"token_delay_s must be 0 or more seconds, got {token_delay_s}")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    with tempfile.TemporaryDirectory(prefix="rag-bench-load-") as tmp:
        workdir = Path(tmp)
        progress("starting the fake model server and `chainlit run app.py` …")
        with running_app(token_delay_s, port, workdir) as url:
            progress(f"chat app on {url}; warm-up session (builds the bm25 index) …")
            report, failed = asyncio.run(_phases(url, sessions, questions, progress))
            if failed:
                progress(f"chainlit log tail:\n{log_tail(workdir / 'chainlit.log', 15)}")
    return report


async def _phases(
    url: str, sessions: int, questions: int, progress: Progress
) -> tuple[dict[str, Any], bool]:
    warm = analyse(await run_sessions(url, ["w"], 1), 1)
    if warm.errors or warm.cross_talk:
        raise RagError(
            "the warm-up question was not answered, so there is nothing to measure: "
            + "; ".join(warm.samples or ["no detail"])
        )
    progress(f"baseline: one session alone, {questions} questions …")
    base = analyse(await run_sessions(url, ["b"], questions), questions)
    progress(f"load: {sessions} sessions × {questions} questions at once …")
    names = [f"s{i:02d}" for i in range(sessions)]
    t0 = time.perf_counter()
    load = analyse(await run_sessions(url, names, questions), questions)
    wall_s = time.perf_counter() - t0
    for line in [*base.samples, *load.samples][:10]:
        progress(line)
    base_p50, base_p95 = _pct(base.latencies_ms, 50), _pct(base.latencies_ms, 95)
    p50, p95 = _pct(load.latencies_ms, 50), _pct(load.latencies_ms, 95)
    report = {
        "sessions": sessions,
        "questions": questions,
        "answers": len(load.latencies_ms),
        "errors": load.errors,
        "cross_talk": load.cross_talk,
        "warnings": load.warnings,
        "unattributed": load.unattributed,
        "p50_ms": _ms(p50),
        "p95_ms": _ms(p95),
        "baseline_p50_ms": _ms(base_p50),
        "baseline_p95_ms": _ms(base_p95),
        "added_p50_ms": _minus(p50, base_p50),
        "added_p95_ms": _minus(p95, base_p95),
        "baseline_errors": base.errors + base.cross_talk,
        "wall_s": round(wall_s, 2),
    }
    return report, bool(load.errors or load.cross_talk or base.errors)
