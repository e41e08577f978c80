"""`rag eval`, `rag bench` and `rag compare`: thin wrappers; the work lives in rag.measure."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import Config, Mode

if TYPE_CHECKING:
    pass
from rag.cli.common import (
    RETRIEVER_CHOICES,
    _print_rows,
    _progress,
    _roles_for,
    models_on_demand,
    require_models,
)


def cmd_eval_retrieval(cfg: Config, args: argparse.Namespace) -> int:
    from rag.measure.eval.beir import eval_retrieval

    names = RETRIEVER_CHOICES if args.retriever == "all" else [args.retriever]
    rows = eval_retrieval(Path(args.data), args.split, names, cfg)
    _print_rows(rows, args.json)
    return 0


def cmd_bench_retrieval(cfg: Config, args: argparse.Namespace) -> int:
    from rag.measure.retrieval_bench import bench_retrieval

    names = RETRIEVER_CHOICES if args.retriever == "all" else [args.retriever]
    _print_rows(bench_retrieval(cfg, args.chunks, names, queries=args.queries), args.json)
    return 0


def cmd_bench_embed(cfg: Config, args: argparse.Namespace) -> int:
    from rag.measure.embed_bench import bench_embed

    row = bench_embed(cfg, args.passages)
    _print_rows([row], args.json)
    return 0


def _qa_assistant(cfg: Config, args: argparse.Namespace) -> Any:
    from rag.assistant import build_assistant
    from rag.config import apply_cost_profile

    profile = getattr(args, "cost_profile", None)
    if profile:
        cfg = apply_cost_profile(cfg, profile)
    return build_assistant(cfg, _progress)


def cmd_eval_answers(cfg: Config, args: argparse.Namespace) -> int:
    from rag.measure.eval.answers import eval_answers, load_qa

    items = load_qa(Path(args.data), args.split)[: args.limit or None]
    modes: list[Mode] = ["never", "always", "auto"] if args.mode == "all" else [args.mode]
    assistant = _qa_assistant(cfg, args)
    roles = _roles_for(modes)
    with models_on_demand(cfg, roles, args), contextlib.ExitStack() as stack:
        # Never score retrieval-only fallbacks as model answers: stop before the first question
        # if a model is down (eval_answers also stops on a fallback midway).
        require_models(cfg, roles)
        sink = (
            stack.enter_context(open(args.details, "w", encoding="utf-8")) if args.details else None
        )

        def write(detail: dict[str, Any]) -> None:  # one line per question, as it is answered
            if sink is not None:
                sink.write(json.dumps(detail) + "\n")
                sink.flush()

        rows = asyncio.run(
            eval_answers(
                assistant, items, modes, strategy=args.strategy, progress=_progress, on_detail=write
            )
        )
    _print_rows(rows, args.json)
    return 0


def cmd_eval_fit_router(cfg: Config, args: argparse.Namespace) -> int:
    import yaml

    from rag.measure.eval.router_fit import fit_router, load_details

    rows = load_details(Path(args.details))
    router, summary = fit_router(
        rows,
        args.target_escalation,
        cfg.escalation.min_support,
        cfg.escalation.router.outside_below,
    )
    if args.json:
        print(json.dumps({"router": router.model_dump(mode="json"), "dev": summary}))
        return 0
    _print_rows([summary], False)
    print("\nPut this under escalation: in rag.yaml (fitted on the dev split only):\n")
    print(yaml.safe_dump({"router": router.model_dump(mode="json")}, sort_keys=False))
    return 0


def cmd_eval_paired(cfg: Config, args: argparse.Namespace) -> int:
    from rag.measure.eval.paired import compare, load_runs

    first = load_runs(Path(args.first))
    second = load_runs(Path(args.second)) if args.second else None
    _print_rows(compare(first, second, args.metric, args.mode or ()), args.json)
    return 0


def cmd_eval_calibrate(cfg: Config, args: argparse.Namespace) -> int:
    from rag.measure.eval.answers import calibrate, load_qa

    names = RETRIEVER_CHOICES if args.retriever == "all" else [args.retriever]
    rows = calibrate(_qa_assistant(cfg, args), load_qa(Path(args.data)), names)
    _print_rows(rows, args.json)
    if not args.json:
        print("\nPut the suggestions under escalation.weak_context in rag.yaml.")
    return 0


def cmd_eval_injection(cfg: Config, args: argparse.Namespace) -> int:
    from rag.measure.eval.answers import load_qa
    from rag.measure.eval.injection import eval_injection

    items = [i for i in load_qa(Path(args.data)) if not i.impossible][: args.limit]
    assistant = _qa_assistant(cfg, args)
    with models_on_demand(cfg, [args.role], args):
        row = asyncio.run(
            eval_injection(
                assistant, [i.question for i in items], role=args.role, progress=_progress
            )
        )
    if args.json:
        print(json.dumps(row))
    else:
        print(
            f"{row['model']}: obeyed the planted instruction in {row['obeyed_before']}/{row['questions']} "
            f"answers with the naive prompt, {row['obeyed_after']}/{row['questions']} with the app's prompt"
        )
    return 0


def cmd_compare(cfg: Config, args: argparse.Namespace) -> int:
    from rag.measure.compare import CompareOptions, run_comparison
    from rag.measure.report import write_report

    # --cold starts and stops its own servers; otherwise reuse running ones or start them here
    on_demand = (
        contextlib.nullcontext() if args.cold else models_on_demand(cfg, ("slm", "llm"), args)
    )

    if args.quick or args.prompt:  # warm latency on two built-in (or given) prompts only
        from rag.measure.compare import DEFAULT_PROMPTS, compare_models
        from rag.models import make_chat_model

        models = [("slm", make_chat_model(cfg, "slm")), ("llm", make_chat_model(cfg, "llm"))]
        prompts = args.prompt or list(DEFAULT_PROMPTS)
        with on_demand:
            quick = asyncio.run(
                compare_models(
                    models, prompts, args.rounds, max_tokens=args.max_tokens, progress=_progress
                )
            )
        for row in quick:
            row.pop("ttft_ms", None)
        _print_rows(quick, args.json)
        return 1 if any("error" in r for r in quick) else 0
    opts = CompareOptions(
        data=Path(args.data),
        limit=args.limit,
        split=args.split,
        cold=args.cold,
        rounds=args.rounds,
        max_tokens=args.max_tokens,
        judge=not args.no_judge,
        escalation_rate=args.escalation_rate,
        cost_profile=args.cost_profile,
        volume_per_day=args.volume_per_day,
    )
    if args.cold:  # a plain `kill` must still stop the servers this command started
        import signal

        def _interrupt(_sig: int, _frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _interrupt)
    with on_demand:
        result = run_comparison(cfg, opts, _progress)
    latest = write_report(result, cfg.data_dir / "reports" / "latest.html")
    _progress(f"report: {latest} (served by the chat at /reports/latest)")
    if args.report:
        _progress(f"report: {write_report(result, Path(args.report))}")
    rows = result["models"]
    if args.json:
        for row in rows:
            print(json.dumps({"kind": "model", **row}, ensure_ascii=False))
        print(json.dumps({"kind": "run", **result["run"]}, ensure_ascii=False))
    else:
        keys = ["model", "ttft_ms_p50", "total_ms_p50", "tokens_per_s", "rss_mb", "rss_peak_mb",
                "file_mb", "cold_start_ms", "contains_gold", "f1", "abstain_impossible"]  # fmt: skip
        _print_rows(
            [
                {
                    **{k: r.get(k) for k in keys},
                    "rubric": "/".join(
                        str((r.get("rubric") or {}).get(c))
                        for c in ("coherence", "factuality", "conciseness")
                    ),
                }
                for r in rows
            ],
            False,
        )
        for r in rows:
            if r.get("memory_note"):
                print(f"{r['model']}: memory {r['memory_note']}")
        run = result["run"]
        print(
            f"\ncost at escalation rate {run['escalation_rate']:.0%} ({run['escalation_rate_source']}):"
        )
        _print_rows(run["costs"], False)
    return 1 if any(r.get("warm_error") for r in rows) else 0


def cmd_bench_load(cfg: Config, args: argparse.Namespace) -> int:
    from rag.measure.load import bench_load

    row = bench_load(
        args.sessions, args.questions, token_delay_s=args.token_delay, port=args.port,
        progress=_progress,
    )  # fmt: skip
    if args.json:
        print(json.dumps(row))
    else:
        _print_rows([row], False)
    return 1 if row.get("errors") or row.get("cross_talk") else 0


def cmd_bench_latency(cfg: Config, args: argparse.Namespace) -> int:
    from rag.measure.latency_bench import bench_latency, load_items

    items, warmups = load_items(Path(args.data), args.limit, args.split)
    _print_rows(asyncio.run(bench_latency(cfg, items, _progress, warmups=warmups)), args.json)
    return 0


def cmd_bench_soak(cfg: Config, args: argparse.Namespace) -> int:
    import rag.measure.load  # noqa: F401  (names the load extra when its libraries are missing)
    from rag.measure.soak import bench_soak

    row = bench_soak(
        args.minutes, sessions=args.sessions, token_delay_s=args.token_delay,
        warmup_s=args.warmup_s, sample_s=args.sample_s, warm_min=args.warm_min, port=args.port,
        progress=_progress,
    )  # fmt: skip
    if args.json:
        print(json.dumps(row))
    else:
        _print_rows([{k: v for k, v in row.items() if not isinstance(v, list)}], False)
    return 1 if row.get("errors") or row.get("cross_talk") else 0
