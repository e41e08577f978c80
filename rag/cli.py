"""The `rag` command: index, ask, serve, models, eval, bench, compare.

Exit codes: 0 ok, 2 bad usage or configuration, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import (
    MODES,
    RETRIEVER_NAMES,
    ROLES,
    STRATEGIES,
    Config,
    Mode,
    base_url_for,
    load_config,
)
from rag.errors import ConfigError, InputError, ModelError, RagError
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

if TYPE_CHECKING:
    from rag.assistant import AskOptions, Assistant
    from rag.models.embedded import Role

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RETRIEVER_CHOICES: list[str] = list(RETRIEVER_NAMES)
APP_STOP_TIMEOUT_S = 5.0  # Chainlit's graceful stop, before SIGKILL


def _err(msg: str) -> None:
    print(f"rag: {msg}", file=sys.stderr)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- models on demand ----


def _roles_for(modes: Sequence[str]) -> tuple[Role, ...]:
    """The chat models that answering in these escalation modes may call."""
    roles: list[Role] = []
    if any(m != "always" for m in modes):
        roles.append("slm")
    if any(m != "never" for m in modes):
        roles.append("llm")
    return tuple(roles)


@contextlib.contextmanager
def models_on_demand(
    cfg: Config, roles: Sequence[Role], args: argparse.Namespace, *, required: bool = True
) -> Iterator[None]:
    """Reuse the model servers already running, or start the embedded ones for this command.

    Servers started here are stopped when the command ends (and on SIGINT/SIGTERM/SIGHUP);
    `--no-start-models` turns starting off. Only provider `embedded` is ever started. When a
    server cannot start, `required` raises; otherwise the command goes on without it (`rag ask`
    then prints the best passages, as it does when a model is down).
    """
    if getattr(args, "no_start_models", False):
        yield
        return
    from rag.procs import EmbeddedServers

    with contextlib.ExitStack() as stack:
        try:
            servers = stack.enter_context(EmbeddedServers(cfg, roles, progress=_progress))
        except ModelError as exc:
            if required:
                raise
            _progress(f"[warning] could not start the embedded models: {exc}")
            yield
            return
        if servers.started:
            _progress(
                "started for this command and stopped when it ends: "
                + ", ".join(f"{s.alias} ({s.base_url})" for s in servers.started)
                + " (--no-start-models turns this off)"
            )
        yield


def require_models(cfg: Config, roles: Sequence[Role]) -> None:
    """Raise ModelError naming the model and its URL when one of `roles` does not answer."""
    from rag.models.embedded import reachable

    for role in roles:
        mcfg = cfg.models.slm if role == "slm" else cfg.models.llm
        url = base_url_for(mcfg, cfg.models.embedded, role)
        if not reachable(url):
            fix = (
                "start it with `rag models serve` or run without --no-start-models"
                if mcfg.provider == "embedded" and mcfg.base_url is None
                else f"start the {mcfg.provider} server or fix models.{role}.base_url"
            )
            raise ModelError(
                f"the {'small' if role == 'slm' else 'large'} model {mcfg.model} ({role}) does "
                f"not answer at {url}: {fix}",
                kind="refused",
            )


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
    from rag.latency import latency_json

    m = done.metrics
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
        "sufficiency": None if m.sufficiency is None else round(m.sufficiency, 4),
        "incomplete": m.incomplete,
        "timings": latency_json(m),  # the breakdown: prep, retrieval, packing, per stage
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
    roles = _roles_for([args.mode or cfg.escalation.mode])
    with models_on_demand(cfg, roles, args, required=False):
        return await _ask_stream(assistant, opts, args)


async def _ask_stream(assistant: Assistant, opts: AskOptions, args: argparse.Namespace) -> int:
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
    if args.foundry or args.foundry_model:
        from rag.models.foundry_build import build_foundry

        summary["foundry"] = build_foundry(cfg.data_dir, args.foundry_model, progress=_progress)
    print(json.dumps(summary, indent=1, default=str) if args.json else "models ready")
    return 0


def cmd_models_serve(cfg: Config, args: argparse.Namespace) -> int:
    """Run the embedded servers until Ctrl-C, SIGTERM or SIGHUP; reused ones are left alone."""
    import time

    from rag.procs import EmbeddedServers

    with EmbeddedServers(cfg, progress=_progress) as servers:
        if not servers.specs:
            _err("no model uses the embedded provider; nothing to serve")
            return 0
        if not servers.started:
            _progress("every embedded model is already served; nothing to start")
            return 0
        if cfg.models.embedded.warm_up:
            from rag.models.warmup import warm_up

            warm_up(servers.specs, _progress)
        _progress("embedded models are up; Ctrl-C (or SIGTERM/SIGHUP) stops them")
        try:
            while True:
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
    from rag.procs import EmbeddedServers, Owned

    host = args.host or cfg.server.host
    port = args.port or cfg.server.port
    check_bind(host)
    status = IndexManager(cfg, _progress).open(cfg.retrieval.retriever)[1]
    _progress(status.message)
    # Every child is ours: stopped on Ctrl-C, SIGTERM and SIGHUP (main() turns those into
    # exceptions), killed by the kernel if this process is SIGKILLed (Linux). Reused model
    # servers are left running.
    with (
        EmbeddedServers(cfg, progress=_progress) as servers,
        Owned(timeout_s=APP_STOP_TIMEOUT_S) as owned,
    ):
        if cfg.models.embedded.warm_up:
            from rag.models.warmup import warm_up

            warm_up(servers.specs, _progress)  # the first question must not pay the cold load
        cmd = [sys.executable, "-m", "chainlit", "run", "app.py", "--headless",
               "--host", host, "--port", str(port)]  # fmt: skip
        _progress(f"chat: http://{host}:{port}  (Ctrl-C stops the app and the models)")
        proc = owned.start(cmd)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return 0


# ---- eval / bench / compare (thin wrappers; the work lives in rag.measure.eval and rag.bench_*) ----


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
    router, summary = fit_router(rows, args.target_escalation, cfg.escalation.min_support)
    if args.json:
        print(json.dumps({"router": router.model_dump(mode="json"), "dev": summary}))
        return 0
    _print_rows([summary], False)
    print("\nPut this under escalation: in rag.yaml (fitted on the dev split only):\n")
    print(yaml.safe_dump({"router": router.model_dump(mode="json")}, sort_keys=False))
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

    items = load_items(Path(args.data), args.limit)
    _print_rows(asyncio.run(bench_latency(cfg, items, _progress)), args.json)
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


def _no_start_flag(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--no-start-models",
        action="store_true",
        dest="no_start_models",
        help="use only model servers already running; never start the embedded ones",
    )


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
    s.add_argument("--mode", choices=list(MODES))
    s.add_argument("--strategy", choices=list(STRATEGIES))
    s.add_argument("--temperature", type=_ranged(float, 0, 2), metavar="0-2")
    s.add_argument("--seed", type=int)
    _no_start_flag(s)
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
    s.add_argument(
        "--foundry",
        action="store_true",
        help="also convert SmolLM2 for Foundry Local (needs the `foundry` extra)",
    )
    s.add_argument("--foundry-model", action="append", metavar="NAME",
                   help="convert this shipped model for Foundry Local (repeatable)")  # fmt: skip
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
    s.add_argument("--mode", default="all", choices=[*(m for m in MODES if m != "compare"), "all"])
    s.add_argument("--strategy", choices=list(STRATEGIES))
    s.add_argument("--limit", type=int, default=0, help="first N questions only")
    s.add_argument("--cost-profile", dest="cost_profile",
                   help="price with this costs.profiles entry (reference: large 10x small; "
                   "default: costs.profile)")  # fmt: skip
    s.add_argument(
        "--split",
        default="test",
        choices=["dev", "test", "all"],
        help="tune on dev, report on test (a set without split fields is all test)",
    )
    s.add_argument("--details", help="write one JSON line per question and mode to this file")
    _no_start_flag(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_eval_answers)
    s = ev.add_parser("fit-router", help="fit the router on a dev run's --details file")
    s.add_argument(
        "--details",
        required=True,
        help="from: rag eval answers --split dev --mode never --details FILE",
    )
    s.add_argument(
        "--target-escalation",
        type=float,
        default=0.35,
        help="share of questions the router escalates on dev",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_eval_fit_router)
    s = ev.add_parser("calibrate", help="suggest weak-context thresholds per retriever")
    s.add_argument("--data", default="eval/docs_qa")
    s.add_argument("--retriever", default="all", choices=[*RETRIEVER_CHOICES, "all"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_eval_calibrate)

    s = ev.add_parser("injection", help="prompt-injection obedience before/after the hygiene")
    s.add_argument("--data", default="eval/docs_qa")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--role", default="slm", choices=list(ROLES))
    _no_start_flag(s)
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
    _no_start_flag(s)
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
    s = bench.add_parser(
        "soak", help="chats, uploads, settings, /stats, /compare for N minutes: errors, RSS, fds"
    )
    s.add_argument("--minutes", type=float, default=30.0, help="measured time, after the warm-up")
    s.add_argument("--sessions", type=int, default=6, help="concurrent chats")
    s.add_argument("--token-delay", type=float, default=0.01, dest="token_delay")
    s.add_argument("--warmup-s", type=float, default=60.0, dest="warmup_s")
    s.add_argument("--sample-s", type=float, default=15.0, dest="sample_s")
    s.add_argument(
        "--warm-min", type=float, default=5.0, dest="warm_min",
        help="memory growth is also reported from this many minutes in (at most half the run)",
    )  # fmt: skip
    s.add_argument("--port", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_bench_soak)
    s = bench.add_parser("embed", help="passages/s of ORT int8, ORT fp32 and torch")
    s.add_argument("--passages", type=int, default=512)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_bench_embed)
    s = bench.add_parser(
        "latency", help="first token and total time: baseline vs shipped settings (Assistant.ask)"
    )
    s.add_argument("--data", default="eval/docs_qa")
    s.add_argument("--limit", type=int, default=0, help="first N questions only")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_bench_latency)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rag` command."""
    from rag.procs import Terminated, stop_signals

    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        handler: Handler = args.handler
        with stop_signals():  # SIGTERM/SIGHUP unwind like Ctrl-C, stopping what we started
            return handler(cfg, args)
    except Terminated as exc:
        _err(f"{exc}; stopped what this command started")
        return 128 + exc.signum
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
