"""The `rag` command: index, ask, serve, models, eval, bench, compare.

Exit codes: 0 ok, 2 bad usage or configuration, 1 runtime failure.
"""

from __future__ import annotations

# This module is the parser and main(); the commands live beside it: ask.py (rag ask), serve.py
# (index, models, serve), measure.py (eval, bench, compare), common.py (what they share).
# The docstring above is `rag --help`'s description.
import argparse
from collections.abc import Callable, Sequence
from typing import Any

from rag.cli.ask import cmd_ask, done_to_json
from rag.cli.common import RETRIEVER_CHOICES, _err
from rag.cli.measure import (
    cmd_bench_embed,
    cmd_bench_latency,
    cmd_bench_load,
    cmd_bench_retrieval,
    cmd_bench_soak,
    cmd_compare,
    cmd_eval_answers,
    cmd_eval_calibrate,
    cmd_eval_fit_router,
    cmd_eval_injection,
    cmd_eval_paired,
    cmd_eval_retrieval,
)
from rag.cli.serve import check_bind, cmd_index, cmd_models_build, cmd_models_serve, cmd_serve
from rag.config import MODES, ROLES, STRATEGIES, Config, load_config
from rag.errors import ConfigError, InputError, RagError

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
    s = ev.add_parser(
        "paired", help="paired differences of two runs' --details files, bootstrap 95%% interval"
    )
    s.add_argument("first", help="a --details file of rag eval answers")
    s.add_argument(
        "second",
        nargs="?",
        help="same questions, other settings; without it, the modes of FIRST are paired "
        "(auto - always, auto - never, always - never)",
    )
    s.add_argument("--mode", action="append", help="only this mode (repeatable)")
    s.add_argument("--metric", default="correct", choices=["correct", "gold_in_context"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_eval_paired)
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
    s.add_argument("--split", default="all", choices=["dev", "test", "all"])
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


__all__ = ["build_parser", "check_bind", "done_to_json", "main"]
