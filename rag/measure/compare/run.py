"""The measurement: warm prompts, the QA questions per mode, the judge, memory and cost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rag.config import Config, CostProfile, Price
from rag.costs import Tokens, cost_table
from rag.errors import ConfigError, ModelError
from rag.measure.compare.cold import start_cold
from rag.measure.compare.options import CompareOptions
from rag.measure.compare.provenance import _file_info, settings_of
from rag.measure.memory import PeakSampler, hwm_mb, pid_listening_on, rss_mb
from rag.models import CallRecord, ChatModel, Message
from rag.models.embedded import embedded_specs
from rag.stats import p95
from rag.types import Done, Usage

DEFAULT_PROMPTS = (
    "In two sentences, explain what an on-call runbook is for.",
    "List three things a good incident postmortem contains.",
)
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
