"""A/B a llama.cpp server setting on real RAG prompts, interleaved (A, B, A, B, ...).

    python tools/measure_serving.py logits_all --role slm --n 5 --rounds 2 --port 8610

Starts two embedded servers for one model (settings A and B), sends the app's own prompts
(top-5 passages of the first N eval/docs_qa questions, packed as Assistant.ask packs them) to
A then B for each question, and prints one JSON line per request and a summary with medians
and B/A ratios of the server-reported prompt reading and decoding. Both servers read the same
sequence of prompts, so the KV prefix each one reuses (the system prompt) is the same.
On a shared machine absolute figures are noise; the interleaving keeps the ratio fair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from rag.config import load_config
from rag.index import IndexManager
from rag.measure.eval.answers import load_qa
from rag.models import CallRecord, Message
from rag.models.artifacts import gguf_path
from rag.models.embedded import ServerSpec, probe, serve
from rag.models.openai_compat import OpenAICompatModel
from rag.models.warmup import warm_up
from rag.prompts import answer_messages, pack_context

# name -> (A, B): server settings plus "logprobs" (whether the request asks for them)
EXPERIMENTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "logits_all": ({"logits_all": True}, {"logits_all": False}),
    "logprobs": ({"logits_all": True}, {"logits_all": True, "logprobs": True}),
    "prompt_lookup": ({"logits_all": True}, {"logits_all": True, "prompt_lookup": 10}),
    "prompt_lookup_vs_off": ({"logits_all": False}, {"logits_all": True, "prompt_lookup": 10}),
    "prompt_cache": ({"logits_all": False}, {"logits_all": False, "prompt_cache": True}),
}


def prompts(n: int, role: str, retriever: str) -> list[list[Message]]:
    """The app's messages for the first n questions of eval/docs_qa."""
    cfg = load_config("rag.yaml")
    index = IndexManager(cfg)
    out = []
    for item in load_qa(Path("eval/docs_qa"))[:n]:
        hits = index.get(retriever).search(item.question, cfg.retrieval.top_k)
        packed = pack_context(hits, item.question, 4096, 256)
        out.append(answer_messages(item.question, packed.sources, draft=role == "slm"))
    return out


async def one(spec: ServerSpec, messages: list[Message], logprobs: bool) -> CallRecord:
    cfg = load_config("rag.yaml")
    mcfg = cfg.models.slm.model_copy(
        update={"model": spec.alias, "logprobs": logprobs, "temperature": 0.0, "max_tokens": 64}
    )
    # a shared machine can be very slow: measure, don't time out
    timeouts = cfg.models.timeouts.model_copy(update={"first_token_s": 900.0, "total_s": 1800.0})
    model = OpenAICompatModel(mcfg, spec.base_url, timeouts)
    record = CallRecord(model=spec.alias)
    try:
        async for _ in model.stream(messages, record, temperature=0.0, seed=1234):
            pass
    finally:
        await model.aclose()
    return record


def row(variant: str, q: int, r: CallRecord) -> dict[str, Any]:
    u = r.usage()
    return {
        "variant": variant, "q": q, "prompt_tokens": u.prompt_tokens,
        "prompt_eval_tokens": u.prompt_eval_tokens, "cached_tokens": u.cached_tokens,
        "queue_ms": u.queue_ms, "prompt_ms": u.prompt_ms, "ttft_ms": round(u.ttft_ms, 1),
        "decode_ms": u.decode_ms, "completion_tokens": u.completion_tokens,
        "decode_tps": round(u.tokens_per_s, 2),
        "prompt_tps": round(u.prompt_tokens_per_s or 0, 1), "total_ms": round(u.total_ms, 1),
        "logprob_mean": u.logprob_mean, "text": r.text[:80],
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=list(EXPERIMENTS))
    p.add_argument("--role", choices=["slm", "llm"], default="slm")
    p.add_argument("--n", type=int, default=5, help="questions")
    p.add_argument("--rounds", type=int, default=1, help="passes over the questions")
    p.add_argument("--port", type=int, default=8610, help="A gets this port, B the next")
    p.add_argument("--retriever", default="bm25")
    args = p.parse_args()
    cfg = load_config("rag.yaml")
    e = cfg.models.embedded
    file = e.slm_file if args.role == "slm" else e.llm_file
    alias = getattr(cfg.models, args.role).model
    gguf = gguf_path(file, cfg.data_dir)
    a, b = EXPERIMENTS[args.experiment]
    specs = []
    for i, settings in enumerate((a, b)):
        server = {k: v for k, v in settings.items() if k != "logprobs"}
        specs.append(
            ServerSpec(args.role, alias, gguf, args.port + i, e.n_ctx, e.n_threads, **server)
        )  # type: ignore[arg-type]
    for spec in specs:  # serve() would reuse a running server, whatever its settings
        if probe(spec.base_url) is not None:
            sys.exit(f"port {spec.port} is in use; choose another --port")
    msgs = prompts(args.n, args.role, args.retriever)
    rows: list[dict[str, Any]] = []
    with serve(specs, Path("/tmp/measure-serving-logs"), lambda m: print(m, file=sys.stderr)):
        warm_up(specs, lambda m: print(m, file=sys.stderr))
        for _ in range(args.rounds):
            for q, m in enumerate(msgs):
                for name, spec, settings in (("A", specs[0], a), ("B", specs[1], b)):
                    rec = asyncio.run(one(spec, m, bool(settings.get("logprobs"))))
                    rows.append(row(name, q, rec))
                    print(json.dumps(rows[-1]), flush=True)
    summary: dict[str, Any] = {"experiment": args.experiment, "role": args.role, "A": a, "B": b}
    for key in ("prompt_ms", "prompt_tps", "ttft_ms", "decode_tps", "total_ms", "cached_tokens"):
        med = {}
        for name in ("A", "B"):
            vals = [r[key] for r in rows if r["variant"] == name and r[key] is not None]
            med[name] = statistics.median(vals) if vals else None
        summary[key] = med
        if med["A"] and med["B"]:
            summary[key]["B/A"] = round(med["B"] / med["A"], 3)
    summary["n_pairs"] = len(rows) // 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
