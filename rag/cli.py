"""The `rag` command: index, ask, serve, models, eval, bench, compare.

Exit codes: 0 ok, 2 bad usage or configuration, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

from rag.config import Config, Mode, Strategy, load_config
from rag.errors import ConfigError, InputError, RagError
from rag.types import (
    ContextPacked,
    Done,
    Escalated,
    Event,
    Failed,
    Notice,
    Retrieved,
    StageStarted,
    Token,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RETRIEVER_CHOICES = ["lexical", "bm25", "embedding", "hybrid"]


def _err(msg: str) -> None:
    print(f"rag: {msg}", file=sys.stderr)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- index ----


def cmd_index(cfg: Config, args: argparse.Namespace) -> int:
    from rag.index import IndexManager

    names = (
        RETRIEVER_CHOICES
        if args.retriever == "all"
        else [args.retriever or cfg.retrieval.retriever]
    )
    manager = IndexManager(cfg, _progress)
    failed = 0
    for name in names:
        try:
            _, status = manager.open(name, force=args.force)
        except RagError as exc:
            _err(f"{name}: {exc}")
            failed += 1
            continue
        print(f"{status.message} [{status.seconds:.2f} s]")
        for doc, reason in sorted(status.skipped.items()):
            print(f"  skipped {doc}: {reason}")
        for warning in status.warnings:
            print(f"  warning: {warning}")
    return 1 if failed else 0


# ---- ask ----


def done_to_json(done: Done, question: str) -> dict[str, Any]:
    """The `rag ask --json` object."""
    m = done.metrics
    stages = {
        stage: {
            "model": u.model,
            "ttft_ms": round(u.ttft_ms, 1),
            "total_ms": round(u.total_ms, 1),
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "tokens_per_s": round(u.tokens_per_s, 1),
            "tokens_estimated": u.tokens_estimated,
        }
        for stage, u in m.stages
    }
    first = m.stages[0][1] if m.stages else None  # the first token the user saw
    return {
        "question": question,
        "answer": done.answer,
        "sources": [
            {
                "id": s.chunk.id,
                "n": s.n,
                "path": s.chunk.path,
                "title": s.chunk.title,
                "heading": s.chunk.heading,
                "score": round(s.hit.score, 4),
                "cited": any(c.n == s.n and c.source is not None for c in done.citations),
            }
            for s in done.sources
        ],
        "unverified_citations": [c.n for c in done.citations if c.source is None],
        "model": done.model,
        "models": list(m.models),
        "retriever": m.retriever,
        "escalated": m.escalated,
        "reason": m.reason,
        "abstained": done.abstained,
        "incomplete": m.incomplete,
        "timings": {
            "prep_ms": round(m.prep_ms, 2),
            "retrieval_ms": round(m.retrieval_ms, 2),
            "ttft_ms": round(first.ttft_ms, 1) if first else None,
            "total_ms": round(m.total_ms, 1),
            "stages": stages,
        },
        "tokens": {
            "prompt": sum(u.prompt_tokens for _, u in m.stages),
            "completion": sum(u.completion_tokens for _, u in m.stages),
        },
        "cost": round(m.cost, 6),
    }


async def _ask(cfg: Config, args: argparse.Namespace) -> int:
    from rag.assistant import AskOptions, build_assistant

    assistant = build_assistant(cfg, _progress)
    opts = AskOptions(
        retriever=args.retriever,
        top_k=args.top_k,
        mode=args.mode,
        strategy=args.strategy,
        temperature=args.temperature,
        seed=args.seed,
    )
    # Bad input is refused before anything else happens; opening the index is start-up, not
    # per-question work, so it is kept out of prep_ms.
    assistant.check_question(args.question)
    with contextlib.suppress(RagError):
        assistant.index.get(args.retriever or cfg.retrieval.retriever)
    out = sys.stdout
    streaming_stage = ""
    done: Done | None = None
    notices: list[str] = []
    async for ev in assistant.ask(args.question, opts):
        done = ev if isinstance(ev, Done) else done
        if isinstance(ev, Notice):
            notices.append(ev.text)
        if args.json:
            if isinstance(ev, Failed):
                print(json.dumps({"error": ev.message, "kind": ev.kind}))
                return 2 if ev.kind == "bad_input" else 1
            continue
        _render_cli(ev, out)
        if isinstance(ev, StageStarted):
            streaming_stage = ev.stage
        if isinstance(ev, Failed):
            _err(ev.message)
            return 2 if ev.kind == "bad_input" else 1
    if done is None:
        return 1
    if args.json:
        print(
            json.dumps(
                {**done_to_json(done, args.question), "notices": notices}, ensure_ascii=False
            )
        )
    del streaming_stage
    return 1 if done.model == "retrieval-only" else 0


def _render_cli(ev: Event, out: Any) -> None:
    if isinstance(ev, Retrieved):
        _progress(f"[retrieve] {ev.retriever}: {len(ev.hits)} hits in {ev.retrieval_ms:.1f} ms")
    elif isinstance(ev, ContextPacked) and ev.dropped:
        _progress(f"[context] {ev.dropped} passages left out to fit the window")
    elif isinstance(ev, StageStarted):
        _progress(f"[{ev.stage}] {ev.model}")
    elif isinstance(ev, Token):
        out.write(ev.text)
        out.flush()
    elif isinstance(ev, Escalated):
        out.write("\n")
        _progress(f"[escalate] {ev.decision.reason}")
    elif isinstance(ev, Notice):
        _progress(f"[{ev.level}] {ev.text}")
    elif isinstance(ev, Done):
        if ev.model in ("policy", "retrieval-only"):
            out.write(ev.answer)
        out.write("\n\nSources:\n")
        cited = {c.n for c in ev.citations if c.source is not None}
        for s in ev.sources:
            mark = "*" if s.n in cited else " "
            out.write(
                f" {mark}[{s.n}] {s.chunk.path} — {s.chunk.heading or s.chunk.title} ({s.hit.score:.3f})\n"
            )
        bad = [c.n for c in ev.citations if c.source is None]
        if bad:
            out.write(f"Unverified citations (not among the sources): {bad}\n")
        m = ev.metrics
        out.write(
            f"\n{m.retriever} · {ev.model} · retrieval {m.retrieval_ms:.0f} ms · total {m.total_ms:.0f} ms"
            + (f" · {m.reason}" if m.reason else "")
            + "\n"
        )


def cmd_ask(cfg: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_ask(cfg, args))


# ---- models ----


def cmd_models_build(cfg: Config, args: argparse.Namespace) -> int:
    from rag.models.artifacts import build_all

    summary = build_all(cfg, chat_models=not args.embedding_only, progress=_progress)
    print(json.dumps(summary, indent=1, default=str) if args.json else "models ready")
    return 0


def cmd_models_serve(cfg: Config, args: argparse.Namespace) -> int:
    from rag.models.embedded import embedded_specs, serve

    specs = embedded_specs(cfg)
    if not specs:
        _err("no model uses the embedded provider; nothing to serve")
        return 0
    with serve(specs, cfg.data_dir / "logs", _progress):
        _progress("embedded models are up; press Ctrl-C to stop")
        try:
            while True:
                import time

                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def check_bind(host: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse a non-loopback address unless password authentication is configured."""
    env = os.environ if environ is None else environ
    if host in ("127.0.0.1", "localhost", "::1"):
        return
    if not env.get("CHAINLIT_AUTH_SECRET") or not env.get("RAG_USERS"):
        raise ConfigError(
            f"refusing to bind {host} without authentication: anyone on the network could read "
            "your documents. Set CHAINLIT_AUTH_SECRET (run `chainlit create-secret`) and RAG_USERS "
            "(user:password pairs), or keep the default 127.0.0.1"
        )


def cmd_serve(cfg: Config, args: argparse.Namespace) -> int:
    """Start the embedded model servers (if configured) and the Chainlit app; stop both together."""
    from rag.index import IndexManager
    from rag.models.embedded import embedded_specs, serve

    host = args.host or cfg.server.host
    port = args.port or cfg.server.port
    check_bind(host)
    status = IndexManager(cfg, _progress).open(cfg.retrieval.retriever)[1]
    _progress(status.message)
    with serve(embedded_specs(cfg), cfg.data_dir / "logs", _progress):
        cmd = [sys.executable, "-m", "chainlit", "run", "app.py", "--headless",
               "--host", host, "--port", str(port)]  # fmt: skip
        _progress(f"chat: http://{host}:{port}  (Ctrl-C stops the app and the models)")
        proc = subprocess.Popen(cmd)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=15)
            return 0


# ---- eval / bench / compare (thin wrappers; the work lives in rag.evaluation and rag.bench_*) ----


def _print_rows(rows: Sequence[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    if not rows:
        return
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(_fmt(r.get(k))) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(_fmt(r.get(k)).ljust(widths[k]) for k in keys))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def cmd_eval_retrieval(cfg: Config, args: argparse.Namespace) -> int:
    from rag.evaluation.beir import eval_retrieval

    names = RETRIEVER_CHOICES if args.retriever == "all" else [args.retriever]
    rows = eval_retrieval(Path(args.data), args.split, names, cfg)
    _print_rows(rows, args.json)
    return 0


def cmd_bench_retrieval(cfg: Config, args: argparse.Namespace) -> int:
    from rag.bench_retrieval import bench_retrieval

    names = RETRIEVER_CHOICES if args.retriever == "all" else [args.retriever]
    _print_rows(bench_retrieval(cfg, args.chunks, names, queries=args.queries), args.json)
    return 0


def cmd_bench_embed(cfg: Config, args: argparse.Namespace) -> int:
    from rag.bench_embed import bench_embed

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
    from rag.evaluation.answers import eval_answers, load_qa

    items = load_qa(Path(args.data))[: args.limit or None]
    modes: list[Mode] = ["never", "always", "auto"] if args.mode == "all" else [args.mode]
    assistant = _qa_assistant(cfg, args)
    details: list[dict[str, Any]] = []
    rows = asyncio.run(
        eval_answers(
            assistant, items, modes, strategy=args.strategy, progress=_progress, details=details
        )
    )
    if args.details:
        Path(args.details).write_text("".join(json.dumps(d) + "\n" for d in details))
    _print_rows(rows, args.json)
    return 0


def cmd_eval_calibrate(cfg: Config, args: argparse.Namespace) -> int:
    from rag.evaluation.answers import calibrate, load_qa

    names = RETRIEVER_CHOICES if args.retriever == "all" else [args.retriever]
    rows = calibrate(_qa_assistant(cfg, args), load_qa(Path(args.data)), names)
    _print_rows(rows, args.json)
    if not args.json:
        print("\nPut the suggestions under escalation.weak_context in rag.yaml.")
    return 0


def cmd_eval_injection(cfg: Config, args: argparse.Namespace) -> int:
    from rag.evaluation.answers import load_qa
    from rag.evaluation.injection import eval_injection

    items = [i for i in load_qa(Path(args.data)) if not i.impossible][: args.limit]
    assistant = _qa_assistant(cfg, args)
    row = asyncio.run(
        eval_injection(assistant, [i.question for i in items], role=args.role, progress=_progress)
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
    from rag.compare import CompareOptions, run_comparison
    from rag.report import write_report

    if args.quick or args.prompt:  # warm latency on two built-in (or given) prompts only
        from rag.compare import DEFAULT_PROMPTS, compare_models
        from rag.models import make_chat_model

        models = [("slm", make_chat_model(cfg, "slm")), ("llm", make_chat_model(cfg, "llm"))]
        prompts = args.prompt or list(DEFAULT_PROMPTS)
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
    from rag.bench_load import bench_load

    row = bench_load(
        args.sessions, args.questions, token_delay_s=args.token_delay, port=args.port,
        progress=_progress,
    )  # fmt: skip
    if args.json:
        print(json.dumps(row))
    else:
        _print_rows([row], False)
    return 1 if row.get("errors") or row.get("cross_talk") else 0


# ---- argument parsing ----

Handler = Callable[[Config, argparse.Namespace], int]


def _ranged(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    """An argparse type that also checks the range the config allows."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low:g}..{high:g}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rag", description=__doc__)
    p.add_argument("--config", default="rag.yaml", help="path to rag.yaml (default: ./rag.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("index", help="build or update the persisted index")
    s.add_argument("--retriever", choices=[*RETRIEVER_CHOICES, "all"])
    s.add_argument("--force", action="store_true", help="rebuild from scratch")
    s.set_defaults(handler=cmd_index)

    s = sub.add_parser("ask", help="answer one question from the documents")
    s.add_argument("question")
    s.add_argument("--retriever", choices=RETRIEVER_CHOICES)
    s.add_argument("--top-k", type=_ranged(int, 1, 50), dest="top_k", metavar="1-50")
    s.add_argument("--mode", choices=list(get_args(Mode)))
    s.add_argument("--strategy", choices=list(get_args(Strategy)))
    s.add_argument("--temperature", type=_ranged(float, 0, 2), metavar="0-2")
    s.add_argument("--seed", type=int)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(handler=cmd_ask)

    s = sub.add_parser("serve", help="start the embedded models and the chat at 127.0.0.1:8000")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(handler=cmd_serve)

    models = sub.add_parser("models", help="build or serve the embedded models").add_subparsers(
        dest="models_command", required=True
    )
    s = models.add_parser("build", help="assemble GGUF files and export the ONNX encoder")
    s.add_argument("--embedding-only", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_models_build)
    s = models.add_parser("serve", help="run the llama.cpp servers until Ctrl-C")
    s.set_defaults(handler=cmd_models_serve)

    ev = sub.add_parser("eval", help="measure quality").add_subparsers(
        dest="eval_command", required=True
    )
    s = ev.add_parser("retrieval", help="nDCG@10, recall, MRR on BEIR-layout data")
    s.add_argument("--data", required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--retriever", default="all", choices=[*RETRIEVER_CHOICES, "all"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_eval_retrieval)

    s = ev.add_parser(
        "answers", help="contains-gold, F1, abstention, escalation, latency, cost per mode"
    )
    s.add_argument("--data", default="eval/docs_qa")
    s.add_argument("--mode", default="all", choices=[*get_args(Mode)[:3], "all"])
    s.add_argument("--strategy", choices=list(get_args(Strategy)))
    s.add_argument("--limit", type=int, default=0, help="first N questions only")
    s.add_argument("--cost-profile", dest="cost_profile",
                   help="price with this costs.profiles entry (reference: large 10x small; "
                   "default: costs.profile)")  # fmt: skip
    s.add_argument("--details", help="write one JSON line per question and mode to this file")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_eval_answers)
    s = ev.add_parser("calibrate", help="suggest weak-context thresholds per retriever")
    s.add_argument("--data", default="eval/docs_qa")
    s.add_argument("--retriever", default="all", choices=[*RETRIEVER_CHOICES, "all"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_eval_calibrate)

    s = ev.add_parser("injection", help="prompt-injection obedience before/after the hygiene")
    s.add_argument("--data", default="eval/docs_qa")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--role", default="slm", choices=["slm", "llm"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_eval_injection)

    s = sub.add_parser(
        "compare", help="small vs large: latency, cold start, memory, quality, cost, HTML report"
    )
    s.add_argument("--data", default="eval/docs_qa", help="QA folder (queries + gold answers)")
    s.add_argument("--limit", type=_ranged(int, 1, 10_000), default=10, help="first N questions")
    s.add_argument("--split", default="test", choices=["dev", "test", "all"],
                   help="answers.jsonl rows without a split field count as test")  # fmt: skip
    s.add_argument("--cold", action="store_true",
                   help="start the embedded servers here (free ports) and time start to first token")  # fmt: skip
    s.add_argument("--no-judge", action="store_true", dest="no_judge",
                   help="skip the rubric judged by the large model")  # fmt: skip
    s.add_argument("--escalation-rate", type=_ranged(float, 0, 1), dest="escalation_rate",
                   help="cascade cost at this rate instead of measuring an auto run")  # fmt: skip
    s.add_argument("--cost-profile", dest="cost_profile",
                   help="one profile of costs.profiles (or config); default: all of them")  # fmt: skip
    s.add_argument("--volume-per-day", type=_ranged(int, 0, 10**9), dest="volume_per_day",
                   help="questions per day for the monthly cost (default costs.volume_per_day)")  # fmt: skip
    s.add_argument("--report", help="also write the HTML report to this file")
    s.add_argument(
        "--quick",
        action="store_true",
        help="only warm latency on two built-in prompts (the old rag compare)",
    )
    s.add_argument("--prompt", action="append",
                   help="with --quick: these prompts instead (repeatable; implies --quick)")  # fmt: skip
    s.add_argument("--rounds", type=_ranged(int, 0, 100), default=1,
                   help="rounds of the two warm short prompts (0: none)")  # fmt: skip
    s.add_argument("--max-tokens", type=int, default=128, dest="max_tokens",
                   help="for the warm short prompts")  # fmt: skip
    s.add_argument("--json", action="store_true", help="one JSON object per model, then the run")
    s.set_defaults(handler=cmd_compare)

    bench = sub.add_parser("bench", help="measure speed").add_subparsers(
        dest="bench_command", required=True
    )
    s = bench.add_parser("retrieval", help="build time, query p50/p95, peak memory")
    s.add_argument("--chunks", type=int, default=10_000)
    s.add_argument("--queries", type=int, default=200)
    s.add_argument("--retriever", default="all", choices=[*RETRIEVER_CHOICES, "all"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_bench_retrieval)
    s = bench.add_parser("load", help="concurrent chat sessions through the real Chainlit server")
    s.add_argument("--sessions", type=int, default=20)
    s.add_argument("--questions", type=int, default=5)
    s.add_argument("--token-delay", type=float, default=0.02, dest="token_delay")
    s.add_argument("--port", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_bench_load)
    s = bench.add_parser("embed", help="passages/s of ORT int8, ORT fp32 and torch")
    s.add_argument("--passages", type=int, default=512)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_bench_embed)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rag` command."""
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        handler: Handler = args.handler
        return handler(cfg, args)
    except (ConfigError, InputError) as exc:
        _err(str(exc))
        return 2
    except RagError as exc:
        _err(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
