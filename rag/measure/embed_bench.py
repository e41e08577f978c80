"""`rag bench embed`: passages per second of ORT int8, ORT fp32 and sentence-transformers (torch).

All three encode the same passages in one process, after a warm-up each. Rounds alternate
between backends and the best round counts, so a noisy neighbour on a shared machine skews
all three alike rather than whichever happened to run during the noise.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import numpy as np

from rag.config import Config
from rag.retrieval.encoder import Encoder, load_encoder
from rag.text import chunk_text

_SUBJECTS = ("The deploy pipeline", "Our on-call engineer", "The billing service", "Each team")
_VERBS = ("rotates", "reviews", "restarts", "archives", "escalates", "documents", "monitors")
_OBJECTS = (
    "the API keys in the vault",
    "failed database migrations",
    "the weekly incident report",
    "expense claims over the limit",
    "customer data retention rules",
    "the Kubernetes liveness probes",
)
_TAILS = ("before every release.", "within fifteen minutes.", "every ninety days.", "on Fridays.")


def generated_passages(n: int, seed: int = 7) -> list[str]:
    """n passages of 1-12 plausible sentences each, deterministic for a seed."""
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(part) for part in (_SUBJECTS, _VERBS, _OBJECTS, _TAILS))

    return [" ".join(sentence() for _ in range(rng.randint(1, 12))) for _ in range(n)]


def bench_passages(cfg: Config, n: int) -> tuple[list[str], str]:
    """n passages: the corpus chunks (cycled if there are fewer) or generated text."""
    from rag.corpus import chunk_documents, load_documents

    chunks = []
    if cfg.corpus.path.is_dir():
        chunks = chunk_documents(load_documents(cfg.corpus).documents, cfg.corpus)
    if not chunks:
        return generated_passages(n), "generated"
    texts = [chunk_text(c) for c in chunks]
    source = f"{cfg.corpus.path} ({len(texts)} chunks{', cycled' if len(texts) < n else ''})"
    return list(itertools.islice(itertools.cycle(texts), n)), source


def _time(encoder: Encoder, texts: list[str]) -> tuple[float, np.ndarray[Any, Any]]:
    start = time.perf_counter()
    vectors = encoder.encode(texts)
    return time.perf_counter() - start, vectors


def bench_embed(cfg: Config, n: int = 512, rounds: int = 3) -> dict[str, Any]:
    """Throughput and agreement of the three embedding backends on the same n passages."""
    if n < 1 or rounds < 1:
        raise ValueError(f"n and rounds must be at least 1, got n={n}, rounds={rounds}")
    texts, source = bench_passages(cfg, n)
    encoders = {
        name: load_encoder(cfg, backend=name) for name in ("onnx-int8", "onnx-fp32", "torch")
    }
    for encoder in encoders.values():
        encoder.encode(texts[:16])  # warm-up: allocations, thread pools, lazy init
    best = dict.fromkeys(encoders, float("inf"))
    vectors: dict[str, np.ndarray[Any, Any]] = {}
    for _ in range(rounds):
        for name, encoder in encoders.items():
            seconds, vectors[name] = _time(encoder, texts)
            best[name] = min(best[name], seconds)
    pps = {name: n / seconds for name, seconds in best.items()}
    int8, fp32, torch = vectors["onnx-int8"], vectors["onnx-fp32"], vectors["torch"]
    emb = cfg.retrieval.embedding
    return {
        "passages": n,
        "source": source,
        "batch_size": emb.batch_size,
        "threads": emb.threads,
        "int8_pps": pps["onnx-int8"],
        "fp32_pps": pps["onnx-fp32"],
        "torch_pps": pps["torch"],
        "int8_vs_torch": pps["onnx-int8"] / pps["torch"],
        "fp32_vs_torch": pps["onnx-fp32"] / pps["torch"],
        "cos_int8_torch": float((int8 * torch).sum(axis=1).mean()),
        "min_cos_int8_torch": float((int8 * torch).sum(axis=1).min()),
        "maxdiff_fp32_torch": float(np.abs(fp32 - torch).max()),
    }
