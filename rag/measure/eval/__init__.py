"""Retrieval evaluation: BEIR-style metrics and runs on BEIR-layout data."""

from rag.measure.eval.beir import eval_retrieval, load_beir, tune_hybrid
from rag.measure.eval.metrics import evaluate, mrr_at_k, ndcg_at_k, recall_at_k

__all__ = [
    "eval_retrieval",
    "evaluate",
    "load_beir",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
    "tune_hybrid",
]
