"""Retrieval evaluation on BEIR-layout data (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).

Each BEIR document becomes one chunk (id = doc id), every retriever is built fresh on them and
asked for its top 100 per query; hits are mapped to doc ids (first occurrence kept) and scored
with rag.measure.eval.metrics. ``qps`` times the whole query batch (``search_many`` where a
retriever has it), ``build_s`` times construction plus ``build``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from rag.config import Config, HybridConfig
from rag.errors import ConfigError, CorpusError
from rag.measure.eval.metrics import evaluate
from rag.retrieval.base import Retriever, search_many
from rag.types import Chunk, Hit

RETRIEVE_K = 100
METRIC_KEYS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")

Factory = Callable[[str, Config], Retriever]
Qrels = dict[str, dict[str, int]]


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CorpusError(
            f"cannot read {path} ({exc.strerror}); a BEIR folder holds corpus.jsonl, "
            "queries.jsonl and qrels/<split>.tsv"
        ) from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError:
                raise CorpusError(f"{path}:{n} is not a JSON object: {line[:80]!r}") from None


def load_qrels(path: Path) -> Qrels:
    """Read a BEIR qrels TSV (query-id, corpus-id, score; optional header row)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CorpusError(
            f"cannot read {path} ({exc.strerror}); pass --split with a file under qrels/"
        ) from None
    qrels: Qrels = {}
    for n, line in enumerate(lines, 1):
        parts = line.strip().split("\t")
        if len(parts) < 3:
            if line.strip():
                raise CorpusError(f"{path}:{n}: expected 3 tab-separated columns, got {line!r}")
            continue
        try:
            grade = int(parts[2])
        except ValueError:
            if n == 1:
                continue  # header row
            raise CorpusError(f"{path}:{n}: score {parts[2]!r} is not an integer") from None
        qrels.setdefault(parts[0], {})[parts[1]] = grade
    return qrels


def load_beir(data_dir: Path, split: str = "test") -> tuple[list[Chunk], dict[str, str], Qrels]:
    """Corpus as one chunk per document, the split's queries (those with qrels) and its qrels."""
    if not data_dir.is_dir():
        raise CorpusError(f"BEIR data folder {data_dir} does not exist; pass --data DIR")
    qrels = load_qrels(data_dir / "qrels" / f"{split}.tsv")
    corpus = [
        Chunk(
            id=str(doc["_id"]),
            doc_id=str(doc["_id"]),
            path=str(doc["_id"]),
            title=str(doc.get("title") or ""),
            heading="",
            text=str(doc.get("text") or ""),
            ordinal=0,
        )
        for doc in _read_jsonl(data_dir / "corpus.jsonl")
    ]
    queries = {
        str(q["_id"]): str(q["text"])
        for q in _read_jsonl(data_dir / "queries.jsonl")
        if str(q["_id"]) in qrels
    }
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise CorpusError(
            f"qrels/{split}.tsv names {len(missing)} queries not in queries.jsonl "
            f"(first: {missing[0]!r}); is {data_dir} a complete BEIR folder?"
        )
    return corpus, queries, qrels


def registry_factory(name: str, cfg: Config) -> Retriever:
    """A fresh retriever from rag.retrieval.RETRIEVERS; unknown names list the choices."""
    from rag.retrieval import RETRIEVERS, make_retriever

    if name not in RETRIEVERS:
        raise ConfigError(f"unknown retriever {name!r}; choose from {', '.join(RETRIEVERS)}, all")
    return make_retriever(name, cfg)  # honours retrieval.store (local or milvus)


def resolve_names(names: Sequence[str]) -> list[str]:
    """Expand ``all`` to every registered retriever, keep order, drop repeats, refuse unknowns."""
    from rag.retrieval import RETRIEVERS

    out: list[str] = []
    for name in names:
        if name != "all" and name not in RETRIEVERS:
            raise ConfigError(
                f"unknown retriever {name!r}; choose from {', '.join(RETRIEVERS)}, all"
            )
        for n in RETRIEVERS if name == "all" else [name]:
            if n not in out:
                out.append(n)
    return out


def doc_run(qids: Sequence[str], results: Sequence[Sequence[Hit]]) -> dict[str, list[str]]:
    """Ranked doc ids per query: hits mapped to ``chunk.doc_id``, first (best) occurrence kept."""
    run: dict[str, list[str]] = {}
    for qid, hits in zip(qids, results, strict=True):
        run[qid] = list(dict.fromkeys(h.chunk.doc_id for h in hits))
    return run


def _timed_build(make: Callable[[], Retriever], corpus: Sequence[Chunk]) -> tuple[Retriever, float]:
    t0 = time.perf_counter()
    retriever = make()
    retriever.build(corpus)
    return retriever, time.perf_counter() - t0


def _row(
    name: str, retriever: Retriever, build_s: float, queries: dict[str, str], qrels: Qrels
) -> dict[str, Any]:
    qids = list(queries)
    t0 = time.perf_counter()
    results = search_many(retriever, [queries[q] for q in qids], RETRIEVE_K)
    elapsed = time.perf_counter() - t0
    row: dict[str, Any] = {"retriever": name}
    row.update(evaluate(qrels, doc_run(qids, results)))
    row["qps"] = len(qids) / elapsed if elapsed > 0 else float("inf")
    row["build_s"] = build_s
    return row


def eval_retrieval(
    data_dir: Path,
    split: str,
    names: list[str],
    cfg: Config,
    build_factory: Factory | None = None,
) -> list[dict[str, Any]]:
    """One row per retriever: ndcg@10, recall@10, recall@100, mrr@10, qps, build_s, retriever.

    With the default factory, ``hybrid`` reuses the ``bm25`` and ``embedding`` retrievers built
    earlier in the same call (so the corpus is encoded once); its build_s is then their sum.
    """
    corpus, queries, qrels = load_beir(data_dir, split)
    factory = build_factory or registry_factory
    built: dict[str, tuple[Retriever, float]] = {}
    rows: list[dict[str, Any]] = []
    for name in resolve_names(names) if build_factory is None else names:
        local = cfg.retrieval.store == "local"
        if (
            build_factory is None
            and local
            and name == "hybrid"
            and {"bm25", "embedding"} <= set(built)
        ):
            from rag.retrieval.hybrid import HybridRetriever

            (sparse, s_s), (dense, d_s) = built["bm25"], built["embedding"]
            retriever: Retriever = HybridRetriever(
                sparse, dense, cfg.retrieval.hybrid, chunks=corpus
            )
            build_s = s_s + d_s
        else:
            retriever, build_s = _timed_build(partial(factory, name, cfg), corpus)
        built[name] = (retriever, build_s)
        rows.append(_row(name, retriever, build_s, queries, qrels))
    return rows


def tune_hybrid(
    data_dir: Path,
    split: str,
    cfg: Config,
    rrf_ks: Sequence[int] = (10, 20, 60),
    alphas: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
    build_factory: Factory | None = None,
) -> list[dict[str, Any]]:
    """Score each fusion setting on one bm25 and one embedding run; rows best nDCG@10 first.

    Rows carry ``method``, ``rrf_k``, ``alpha`` and the four metrics; the two single
    retrievers are included as ``method`` "bm25" and "embedding" for reference.
    """
    from rag.retrieval.hybrid import fuse

    corpus, queries, qrels = load_beir(data_dir, split)
    factory = build_factory or registry_factory
    qids = list(queries)
    texts = [queries[q] for q in qids]
    n = max(cfg.retrieval.hybrid.candidates, RETRIEVE_K)
    runs: dict[str, list[list[Hit]]] = {}
    for name in ("bm25", "embedding"):
        retriever, _ = _timed_build(partial(factory, name, cfg), corpus)
        runs[name] = search_many(retriever, texts, n)
    rows: list[dict[str, Any]] = []
    for name, results in runs.items():
        rows.append(
            {"method": name, "rrf_k": None, "alpha": None} | evaluate(qrels, doc_run(qids, results))
        )
    base = cfg.retrieval.hybrid
    settings: list[HybridConfig] = [
        base.model_copy(update={"method": "rrf", "rrf_k": k}) for k in rrf_ks
    ] + [base.model_copy(update={"method": "minmax", "alpha": a}) for a in alphas]
    for setting in settings:
        fused = [
            fuse(s[: setting.candidates], d[: setting.candidates], setting, RETRIEVE_K)
            for s, d in zip(runs["bm25"], runs["embedding"], strict=True)
        ]
        rows.append(
            {
                "method": setting.method,
                "rrf_k": setting.rrf_k if setting.method == "rrf" else None,
                "alpha": setting.alpha if setting.method == "minmax" else None,
            }
            | evaluate(qrels, doc_run(qids, fused))
        )
    rows.sort(key=lambda r: -float(r["ndcg@10"]))
    return rows
