"""`rag compare`: the small and the large model side by side.

Latency (warm short prompts, and the QA questions), cold start (``--cold``), memory of the
model server processes and of this process with its index, gold-answer quality on a QA set,
a rubric judged by the large model, and the cost story under the configured price profiles.
``run_comparison`` returns one dict; rag.report draws it, the CLI prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from rag.config import Config, CostProfile, Price
from rag.costs import Tokens, cost_table
from rag.errors import ConfigError, ModelError
from rag.measure.memory import PeakSampler, hwm_mb, pid_listening_on, rss_mb
from rag.models import CallRecord, ChatModel, Message, make_chat_model
from rag.models.embedded import ServerSpec, embedded_specs
from rag.procs import EmbeddedServers
from rag.stats import p95
from rag.types import Done, Usage

DEFAULT_PROMPTS = (
    "In two sentences, explain what an on-call runbook is for.",
    "List three things a good incident postmortem contains.",
)
COLD_PROMPT = "Say hello."
Role = Literal["slm", "llm"]
ROLES: tuple[Role, Role] = ("slm", "llm")
QA_MODE = {"slm": "never", "llm": "always"}  # the mode in which only that model answers


async def compare_models(
    models: Sequence[tuple[str, ChatModel]],
    prompts: Sequence[str],
    rounds: int,
    *,
    max_tokens: int = 128,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[dict[str, Any]]:
    """One row per model: latency mean/p95, time to first token, tokens/s, tokens, a sample answer."""
    rows: list[dict[str, Any]] = []
    for role, model in models:
        warm = CallRecord(model=model.name)
        msgs: list[Message] = [{"role": "user", "content": prompts[0]}]
        try:
            async for _ in model.stream(msgs, warm, max_tokens=16, temperature=0.0):
                pass
        except ModelError as exc:
            rows.append({"role": role, "model": model.name, "error": str(exc)})
            continue
        records: list[CallRecord] = []
        for r in range(rounds):
            for prompt in prompts:
                rec = CallRecord(model=model.name)
                async for _ in model.stream(
                    [{"role": "user", "content": prompt}],
                    rec,
                    max_tokens=max_tokens,
                    temperature=0.0,
                    seed=r,
                ):
                    pass
                records.append(rec)
                progress(f"{role} {model.name}: {rec.total_ms:.0f} ms")
        totals = [r.total_ms for r in records]
        rows.append(
            {
                "role": role,
                "model": model.name,
                "runs": len(records),
                "latency_mean_ms": round(statistics.fmean(totals), 1),
                "latency_p95_ms": round(p95(totals), 1),
                "ttft_mean_ms": round(statistics.fmean(r.ttft_ms for r in records), 1),
                "ttft_ms": [round(r.ttft_ms, 1) for r in records],
                "tokens_per_s": round(statistics.fmean(r.usage().tokens_per_s for r in records), 1),
                "completion_tokens_mean": round(
                    statistics.fmean(r.completion_tokens for r in records), 1
                ),
                "sample": records[0].text[:200],
            }
        )
    return rows


# ---- options ----


@dataclass(frozen=True)
class CompareOptions:
    """What `rag compare` measures; the CLI fills it from its flags."""

    data: Path = Path("eval/docs_qa")
    limit: int = 10
    split: Literal["dev", "test", "all"] = "test"
    cold: bool = False
    rounds: int = 1  # warm short prompts per model: rounds x 2 prompts (0: none)
    max_tokens: int = 128  # for the warm short prompts
    judge: bool = True
    escalation_rate: float | None = None  # None: measured by an `auto` run on the same questions
    cost_profile: str | None = None  # None: every profile in costs.profiles
    volume_per_day: int | None = None  # None: costs.volume_per_day
    log_dir: Path | None = None  # llama.cpp logs of servers started by --cold

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ConfigError(f"--limit must be at least 1. Currently, it is {self.limit}")
        if self.escalation_rate is not None and not 0 <= self.escalation_rate <= 1:
            raise ConfigError(
                f"--escalation-rate must be between 0 and 1 (a share, 0.3 = 30%). "
                f"Currently, it is {self.escalation_rate}"
            )


# ---- cold start: the one place that starts model servers (swap for the shared helper) ----


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


# ---- measurement ----


@dataclass
class _Collected:
    done: dict[str, list[tuple[Any, Done]]] = field(default_factory=dict)  # mode -> (item, done)

    def add(self, item: Any, mode: str, done: Done) -> None:
        self.done.setdefault(mode, []).append((item, done))


def _usages(answers: Sequence[tuple[Any, Done]], model: str) -> list[Usage]:
    return [u for _, d in answers for _, u in d.metrics.stages if u.model == model]


def _tokens(answers: Sequence[tuple[Any, Done]], model: str) -> Tokens:
    """Mean tokens per answer spent on ``model`` (answers without a call to it count as 0)."""
    if not answers:
        return Tokens(0.0, 0.0)
    per = [[u for _, u in d.metrics.stages if u.model == model] for _, d in answers]
    return Tokens(
        statistics.fmean(sum(u.prompt_tokens for u in us) for us in per),
        statistics.fmean(sum(u.completion_tokens for u in us) for us in per),
    )


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _memory_note(cfg: Config, role: Role) -> str:
    m = cfg.models.slm if role == "slm" else cfg.models.llm
    where = m.base_url or m.provider
    return (
        f"not measurable here: {m.model} runs behind {where} (provider {m.provider}), "
        "not as an embedded llama.cpp process of this machine"
    )


def _file_info(spec: ServerSpec) -> dict[str, Any]:
    from rag.models.artifacts import GGUF_SPECS, sha256_file

    pinned = GGUF_SPECS.get(spec.alias)
    sha = pinned.sha256 if pinned is not None else sha256_file(spec.gguf)
    return {
        "file": spec.gguf.name,
        "file_mb": round(spec.gguf.stat().st_size / 2**20, 1),
        "sha256": sha[:12],
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def settings_of(cfg: Config, opts: CompareOptions, n_items: int) -> dict[str, Any]:
    """The exact settings and versions a comparison ran with."""
    e = cfg.models.embedded
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpu_cores": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "versions": {
            "llama_cpp_python": _version("llama_cpp_python"),
            "openai": _version("openai"),
            "git_commit": _git_commit(),
        },
        "qa": {"data": str(opts.data), "split": opts.split, "questions": n_items},
        "answers": {"temperature": 0.0, "seed": 1234, "warm_prompt_max_tokens": opts.max_tokens},
        "models": {
            role: {
                "provider": m.provider,
                "model": m.model,
                "base_url": m.base_url,
                "max_tokens": m.max_tokens,
                "context_window": m.context_window,
            }
            for role, m in (("slm", cfg.models.slm), ("llm", cfg.models.llm))
        },
        "embedded": {"n_ctx": e.n_ctx, "n_threads": e.n_threads, "cold": opts.cold},
        "retrieval": {"retriever": cfg.retrieval.retriever, "top_k": cfg.retrieval.top_k},
        "context": cfg.context.model_dump(mode="json"),
        "escalation": {
            "mode": "auto",
            "strategy": cfg.escalation.strategy,
            "min_draft_chars": cfg.escalation.min_draft_chars,
            "on_weak_context": cfg.escalation.on_weak_context,
        },
    }


def _profiles(cfg: Config, name: str | None) -> dict[str, CostProfile]:
    """The profiles to price with: one by name, or all ("config" = the models' own prices)."""
    own = CostProfile(
        slm=Price(
            in_per_1k=cfg.models.slm.price_in_per_1k, out_per_1k=cfg.models.slm.price_out_per_1k
        ),
        llm=Price(
            in_per_1k=cfg.models.llm.price_in_per_1k, out_per_1k=cfg.models.llm.price_out_per_1k
        ),
        note="models.slm/llm.price_*_per_1k in rag.yaml",
    )
    if name is None:
        return dict(cfg.costs.profiles)
    if name == "config":
        return {"config": own}
    if name not in cfg.costs.profiles:
        raise ConfigError(
            f"--cost-profile {name!r} is not defined; choose from "
            f"{', '.join(['config', *cfg.costs.profiles])} or add it under costs.profiles in rag.yaml"
        )
    return {name: cfg.costs.profiles[name]}


async def _answer_all(
    assistant: Any,
    models: dict[str, ChatModel],
    items: Sequence[Any],
    opts: CompareOptions,
    progress: Callable[[str], None],
) -> tuple[
    list[dict[str, Any]],
    list[dict[str, Any]],
    _Collected,
    dict[str, list[Any]],
    dict[str, list[dict[str, Any]]],
]:
    """Warm short prompts, the QA questions per mode, then the judge (one event loop: the
    clients keep their connections)."""
    from rag.measure.eval.answers import eval_answers
    from rag.measure.eval.rubric import judge

    warm = (
        await compare_models(
            [(r, models[r]) for r in ROLES],
            DEFAULT_PROMPTS,
            opts.rounds,
            max_tokens=opts.max_tokens,
            progress=progress,
        )
        if opts.rounds > 0
        else []  # --rounds 0: no warm short prompts (the QA answers still give latency)
    )
    collected = _Collected()
    modes = ["never", "always"] + (["auto"] if opts.escalation_rate is None else [])
    quality = await eval_answers(
        assistant,
        items,
        modes,  # type: ignore[arg-type]
        progress=progress,
        on_done=collected.add,
    )
    judged: dict[str, list[Any]] = {"slm": [], "llm": []}
    reasons: dict[str, list[dict[str, Any]]] = {"slm": [], "llm": []}
    if opts.judge:
        for role in ROLES:
            answers = collected.done.get(QA_MODE[role], [])
            for n, (item, done) in enumerate(answers, 1):
                verdict, raw = await judge(
                    models["llm"], item.question, done.answer, [s.chunk.text for s in done.sources]
                )
                judged[role].append(verdict)
                reasons[role].append(
                    {
                        "id": item.id,
                        "scores": verdict.scores() if verdict else None,
                        "reason": verdict.reason if verdict else raw[:200],
                    }
                )
                progress(f"[judge {role} {n}/{len(answers)}] {item.id}: {raw[:80]!r}")
    return warm, quality, collected, judged, reasons


def run_comparison(
    cfg: Config, opts: CompareOptions, progress: Callable[[str], None] = lambda _m: None
) -> dict[str, Any]:
    """Measure both models and return {"models": [per-model row...], "run": {...}}."""
    from rag.assistant import build_assistant
    from rag.measure.eval.answers import load_qa
    from rag.measure.eval.rubric import JUDGE_BIAS, summarize

    items = [i for i in load_qa(opts.data) if opts.split == "all" or i.split == opts.split]
    items = items[: opts.limit]
    if not items:
        raise ConfigError(f"no questions in {opts.data} for --split {opts.split}")
    profiles = _profiles(cfg, opts.cost_profile)  # a bad name fails before anything is measured
    with contextlib.ExitStack() as stack:
        cold: dict[str, dict[str, Any]] = {}
        if opts.cold:
            log_dir = opts.log_dir or cfg.data_dir / "logs"
            cfg, cold = start_cold(cfg, stack, log_dir, progress)
        specs = {s.role: s for s in embedded_specs(cfg)}
        pids = {role: pid_listening_on(s.port) for role, s in specs.items()}
        after_load = {role: rss_mb(pid) for role, pid in pids.items() if pid is not None}

        assistant = build_assistant(cfg, progress)
        assistant.index.get(cfg.retrieval.retriever)  # load the index before measuring the app
        app_rss = rss_mb(os.getpid())
        models = {"slm": assistant.slm, "llm": assistant.llm}

        sampler = PeakSampler([p for p in pids.values() if p is not None]).start()
        try:
            warm, quality, collected, judged, reasons = asyncio.run(
                _answer_all(assistant, models, items, opts, progress)
            )
        finally:
            sampler.stop()
        hwm = {role: hwm_mb(pid) for role, pid in pids.items() if pid is not None}
        started = {role: c["port"] for role, c in cold.items()}

    by_mode = {row["mode"]: row for row in quality}
    rows: list[dict[str, Any]] = []
    for role in ROLES:
        model = models[role]
        usages = _usages(collected.done.get(QA_MODE[role], []), model.name)
        w = next((r for r in warm if r.get("role") == role), {})
        q = by_mode.get(QA_MODE[role], {})
        spec = specs.get(role)
        pid = pids.get(role)
        row: dict[str, Any] = {
            "role": role,
            "model": model.name,
            "provider": (cfg.models.slm if role == "slm" else cfg.models.llm).provider,
            "calls": len(usages),
            "ttft_ms_p50": _median([u.ttft_ms for u in usages]),
            "ttft_ms_p95": round(p95([u.ttft_ms for u in usages]), 1) if usages else None,
            "total_ms_p50": _median([u.total_ms for u in usages]),
            "total_ms_p95": round(p95([u.total_ms for u in usages]), 1) if usages else None,
            "tokens_per_s": _median([u.tokens_per_s for u in usages if u.tokens_per_s > 0]),
            "prompt_tokens_mean": round(statistics.fmean(u.prompt_tokens for u in usages), 1)
            if usages
            else None,
            "completion_tokens_mean": round(
                statistics.fmean(u.completion_tokens for u in usages), 1
            )
            if usages
            else None,
            "warm_ttft_ms_p50": _median(w.get("ttft_ms", [])),
            "warm_error": w.get("error"),
            "rss_mb": None,
            "rss_peak_mb": None,
            "rss_hwm_mb": None,
            "file_mb": None,
            "memory_note": _memory_note(cfg, role),
            "contains_gold": q.get("contains_gold"),
            "f1": q.get("f1"),
            "abstain_impossible": q.get("abstain_impossible"),
            "rubric": summarize(judged[role]) if opts.judge else None,
            "judgements": reasons[role],
            "samples": {
                "ttft_ms": [round(u.ttft_ms, 1) for u in usages],
                "total_ms": [round(u.total_ms, 1) for u in usages],
            },
        }
        if spec is not None:
            row.update(_file_info(spec))
            if pid is None:
                row["memory_note"] = (
                    f"not measurable here: no process of this user listens on port {spec.port}"
                )
            else:
                row.update(
                    {
                        "pid": pid,
                        "started_here": role in started,
                        "rss_mb": _round(after_load.get(role)),
                        "rss_peak_mb": _round(sampler.peak_mb.get(pid)),
                        "rss_hwm_mb": _round(hwm.get(role)),
                        "memory_note": None,
                    }
                )
        if opts.cold:
            c = cold.get(role)
            row["cold_start_ms"] = c["cold_start_ms"] if c else None
            row["ready_ms"] = c["ready_ms"] if c else None
            if c is None:
                row["cold_note"] = "not an embedded model: its server is not started here"
        rows.append(row)

    rate_source: str
    if opts.escalation_rate is None:
        auto = by_mode.get("auto", {})
        rate = float(auto.get("escalation_rate") or 0.0)
        escalated = sum(d.metrics.escalated for _, d in collected.done.get("auto", []))
        rate_source = (
            f"measured: `auto` on the same {auto.get('n', 0)} questions ({escalated} escalated)"
        )
    else:
        rate = opts.escalation_rate
        rate_source = "given with --escalation-rate"
    small = _tokens(collected.done.get("never", []), models["slm"].name)
    large = _tokens(collected.done.get("always", []), models["llm"].name)
    volume = cfg.costs.volume_per_day if opts.volume_per_day is None else opts.volume_per_day
    run = {
        "settings": settings_of(cfg, opts, len(items)),
        "app_rss_mb": _round(app_rss),
        "app_note": f"this process (pid {os.getpid()}) with the {cfg.retrieval.retriever} index loaded",
        "escalation_rate": round(rate, 4),
        "escalation_rate_source": rate_source,
        "cascade": by_mode.get("auto"),
        "quality": quality,
        "tokens": {
            "small": {"prompt": round(small.prompt, 1), "completion": round(small.completion, 1)},
            "large": {"prompt": round(large.prompt, 1), "completion": round(large.completion, 1)},
        },
        "volume_per_day": volume,
        "days_per_month": cfg.costs.days_per_month,
        "costs": cost_table(
            profiles,
            small,
            large,
            rate,
            volume_per_day=volume,
            days_per_month=cfg.costs.days_per_month,
        ),
        "profile_notes": {name: p.note for name, p in profiles.items()},
        "judge": {"model": models["llm"].name, "bias": JUDGE_BIAS} if opts.judge else None,
        "memory_samples": sampler.samples,
        "busy_machine_note": (
            "timings and memory come from a shared machine; other work ran at the same time"
        ),
    }
    return {"models": rows, "run": run}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
