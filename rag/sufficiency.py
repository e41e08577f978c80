"""Does the retrieved context hold the answer? One calibrated probability for every retriever.

Raw retrieval scores are not comparable across questions (a short question has small bm25
scores whatever it asks) nor across retrievers. The features here are: each is a share or a
cosine in [0, 1], computed from the question and the retrieved passages with the corpus IDF:

* ``coverage_idf`` — the best passage's share of the question's IDF weight (BM25 with
  saturated term frequency divided by the query's maximum attainable score);
* ``coverage`` — the best passage's share of the question's distinct content words;
* ``coverage_all`` — the share of IDF weight found anywhere in the retrieved passages;
* ``unknown`` — the share of IDF weight on words no indexed passage contains at all;
* ``margin`` — best passage's ``coverage_idf`` minus the second best;
* ``dense`` — the best cosine of the question to any passage (when an embedding index runs);
* ``terms`` — how many distinct content words the question has (log);
* ``typed_gap`` — for a question that wants a number ("How many…", "When…", "What limit…"):
  the best sentence's share of the question's IDF weight minus the best share among the
  sentences that hold a number. A near miss names what the documents describe but asks what
  they do not state ("Which Kafka version does the cluster run?"): its words meet in a
  sentence, but not in one with a number. Unknown (``None``) for other questions.
* ``sent_dense`` — the best cosine of the question to a sentence of the two best passages
  (when the retriever embeds text): an answer sits in one sentence, and a passage's cosine
  averages it with the rest. On dev, AUC 0.68 answerable vs not against 0.58 for the
  passage-level ``dense``; unknown (``None``) without an embedding model.

A logistic model fitted on the ``dev`` split (``rag eval fit-router``) turns them into the
probability that the question is answerable from the passages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rag.compress import HAS_NUMBER, WANTS_NUMBER, Similarity, sentences
from rag.config import LogisticParams
from rag.termstats import TermStats, chunk_terms, terms
from rag.types import Hit, Sufficiency

__all__ = [
    "FEATURES",
    "Sufficiency",
    "features",
    "fit_logistic",
    "predict",
    "sentence_dense",
    "typed_gap",
    "weight_share",
]

FEATURES = (
    "coverage_idf",
    "coverage",
    "coverage_all",
    "unknown",
    "margin",
    "dense",
    "terms",
    "typed_gap",
    "sent_dense",
)
# ``sent_dense`` reads the sentences of this many best passages.
SENTENCE_PASSAGES = 2


def features(
    question: str,
    hits: Sequence[Hit],
    stats: TermStats,
    dense: float | None = None,
    similarity: Similarity | None = None,
) -> dict[str, float | None]:
    """The sufficiency features of ``hits`` for ``question`` (see the module docstring).

    ``dense`` is the best passage cosine, ``similarity`` the embedding model's question-to-
    sentences cosines; either is unknown (``None``) when the retriever in use embeds nothing.
    """
    weights = stats.weights(terms(question))
    total = sum(weights.values())
    out: dict[str, float | None] = {
        "terms": math.log1p(len(weights)),
        "dense": dense,
        "sent_dense": sentence_dense(question, hits, similarity),
    }
    if not weights or total <= 0:
        out.update(
            coverage_idf=0.0,
            coverage=0.0,
            coverage_all=0.0,
            unknown=1.0,
            margin=0.0,
            typed_gap=None,
        )
        return out
    per_hit: list[tuple[float, float]] = []
    seen: set[str] = set()
    for hit in hits:
        present = chunk_terms(hit.chunk) & weights.keys()
        seen |= present
        per_hit.append((sum(weights[t] for t in present) / total, len(present) / len(weights)))
    per_hit.sort(reverse=True)
    best = per_hit[0] if per_hit else (0.0, 0.0)
    second = per_hit[1][0] if len(per_hit) > 1 else 0.0
    out.update(
        coverage_idf=best[0],
        coverage=max((c for _w, c in per_hit), default=0.0),
        coverage_all=sum(weights[t] for t in seen) / total,
        unknown=sum(w for t, w in weights.items() if stats.df.get(t, 0) == 0) / total,
        margin=best[0] - second,
        typed_gap=typed_gap(question, hits, weights),
    )
    return out


def sentence_dense(
    question: str, hits: Sequence[Hit], similarity: Similarity | None
) -> float | None:
    """The best cosine of ``question`` to a sentence of the ``SENTENCE_PASSAGES`` best hits."""
    if similarity is None:
        return None
    parts = [s for hit in hits[:SENTENCE_PASSAGES] for s in sentences(hit.chunk.text)]
    return max((float(c) for c in similarity(question, parts)), default=0.0) if parts else 0.0


def weight_share(text: str, weights: Mapping[str, float], total: float) -> float:
    """The share of the question's IDF weight (``weights``, summing to ``total``) in ``text``."""
    return sum(weights.get(t, 0.0) for t in set(terms(text))) / total


def typed_gap(question: str, hits: Sequence[Hit], weights: Mapping[str, float]) -> float | None:
    """How much less of the question the best sentence with a number holds than the best one.

    ``None`` unless the question asks for a number (``WANTS_NUMBER``: "how many", "when", "what
    limit"…). Digits in the question do not count: an identifier ("ticket INC-2041", a "[ref
    s00-q1]" tag) names a thing, it does not ask for a number. Each passage's title is a
    sentence of its own. 0 means the question's words meet in a sentence with a
    number; 1, that no sentence with a number holds any of them while one without holds all.
    """
    total = sum(weights.values())
    if total <= 0 or not WANTS_NUMBER.search(question):
        return None
    best = best_typed = 0.0
    for hit in hits:
        for sentence in sentences(f"{hit.chunk.title}\n{hit.chunk.text}"):
            share = weight_share(sentence, weights, total)
            best = max(best, share)
            if HAS_NUMBER.search(sentence):
                best_typed = max(best_typed, share)
    return best - best_typed


def _vector(values: Mapping[str, float | None], params: LogisticParams) -> np.ndarray:
    """Standardised features in the model's order; a missing value sits at the mean (0)."""
    row = []
    for name in params.weights:
        v = values.get(name)
        mean, scale = params.means.get(name, 0.0), params.scales.get(name, 1.0) or 1.0
        row.append(0.0 if v is None or not math.isfinite(v) else (v - mean) / scale)
    return np.asarray(row, dtype=float)


def predict(values: Mapping[str, float | None], params: LogisticParams) -> float:
    """P(positive) under a fitted logistic model."""
    z = params.bias + float(np.dot(_vector(values, params), list(params.weights.values())))
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


@dataclass
class _Fit:
    names: list[str]
    means: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)


def fit_logistic(
    rows: Sequence[Mapping[str, float | None]],
    labels: Sequence[bool],
    names: Sequence[str],
    l2: float = 1.0,
    iterations: int = 50,
) -> LogisticParams:
    """L2-regularised logistic regression by Newton's method on standardised features.

    Missing values are imputed with the feature's mean; a feature missing everywhere gets
    weight 0. Raises ValueError when there are no rows or only one class.
    """
    if not rows or len(rows) != len(labels):
        raise ValueError(
            f"fit_logistic needs one label per row; got {len(rows)} rows, {len(labels)} labels"
        )
    if len(set(labels)) < 2:
        raise ValueError("fit_logistic needs both positive and negative examples")
    fit = _Fit(list(names))
    for name in names:
        vals = [float(v) for r in rows if (v := r.get(name)) is not None and math.isfinite(v)]
        fit.means[name] = float(np.mean(vals)) if vals else 0.0
        sd = float(np.std(vals)) if len(vals) > 1 else 0.0
        fit.scales[name] = sd if sd > 1e-9 else 1.0
    zero = LogisticParams(
        bias=0.0, weights=dict.fromkeys(names, 0.0), means=fit.means, scales=fit.scales
    )
    x = np.stack([_vector(r, zero) for r in rows])
    x = np.hstack([np.ones((len(rows), 1)), x])
    y = np.asarray(labels, dtype=float)
    w = np.zeros(x.shape[1])
    reg = np.full(x.shape[1], l2)
    reg[0] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + reg * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(reg) + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return LogisticParams(
        bias=round(float(w[0]), 6),
        weights={n: round(float(v), 6) for n, v in zip(names, w[1:], strict=True)},
        means={n: round(v, 6) for n, v in fit.means.items()},
        scales={n: round(v, 6) for n, v in fit.scales.items()},
    )
