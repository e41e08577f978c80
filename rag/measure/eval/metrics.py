"""Ranking metrics with BEIR's conventions (as pytrec_eval computes them).

``qrels`` maps query id -> {doc id: graded relevance}; a grade above 0 is relevant. ``run`` maps
query id -> doc ids, best first (a repeated doc id counts once, at its first position). Each
metric is the mean over the queries in ``qrels``; a query missing from ``run``, or with no
relevant doc judged, scores 0 (as in pytrec_eval and ranx). Queries only in ``run`` are ignored.

- nDCG@k: gain = grade, discount = log2(rank + 1), normalised by the ideal ordering of the qrels.
- recall@k: relevant docs in the top k / all relevant docs of the query.
- MRR@k: 1 / rank of the first relevant doc in the top k, 0 if none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Sequence[str]]


def _top(ranked: Sequence[str], k: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for doc in ranked:
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
            if len(out) == k:
                break
    return out


def _check(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1. Currently, k is {k}")


def _mean(
    qrels: Qrels, run: Run, k: int, per_query: Callable[[Mapping[str, int], list[str]], float]
) -> float:
    _check(k)
    values = [
        per_query(judged, _top(run.get(qid, ()), k)) if any(g > 0 for g in judged.values()) else 0.0
        for qid, judged in qrels.items()
    ]
    return sum(values) / len(values) if values else 0.0


def _ndcg(judged: Mapping[str, int], top: list[str], k: int) -> float:
    dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(top))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg


def ndcg_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """Mean nDCG@k with graded gains and a log2 discount."""
    return _mean(qrels, run, k, lambda judged, top: _ndcg(judged, top, k))


def recall_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """Mean fraction of each query's relevant docs found in its top k."""

    def recall(judged: Mapping[str, int], top: list[str]) -> float:
        relevant = {d for d, g in judged.items() if g > 0}
        return len(relevant.intersection(top)) / len(relevant)

    return _mean(qrels, run, k, recall)


def mrr_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """Mean reciprocal rank of the first relevant doc within the top k."""

    def rr(judged: Mapping[str, int], top: list[str]) -> float:
        return next((1.0 / i for i, d in enumerate(top, 1) if judged.get(d, 0) > 0), 0.0)

    return _mean(qrels, run, k, rr)


def evaluate(qrels: Qrels, run: Run) -> dict[str, float]:
    """nDCG@10, recall@10, recall@100 and MRR@10, keyed as in `rag eval retrieval --json`."""
    return {
        "ndcg@10": ndcg_at_k(qrels, run, 10),
        "recall@10": recall_at_k(qrels, run, 10),
        "recall@100": recall_at_k(qrels, run, 100),
        "mrr@10": mrr_at_k(qrels, run, 10),
    }
