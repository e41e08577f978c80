"""Paired comparisons of answer runs: the same questions, two modes or two configurations.

Two runs over the same questions differ less than their separate intervals suggest: most
questions are right (or wrong) in both. The paired difference of per-question correctness, with
a bootstrap interval over questions, is what says whether a change helped. Input is the
``--details`` JSONL of ``rag eval answers`` (one line per question and mode).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rag.errors import CorpusError
from rag.stats import bootstrap_ci

Runs = dict[str, dict[str, dict[str, Any]]]  # mode -> question id -> details row

# Within one run: the comparisons the answer-trust targets are about, when both modes are there.
WITHIN = (("auto", "always"), ("auto", "never"), ("always", "never"))
METRICS = ("correct", "gold_in_context")


def load_runs(path: Path) -> Runs:
    """The details rows of ``path`` by mode and question id; CorpusError when there are none."""
    if not path.exists():
        raise CorpusError(f"{path} does not exist; write it with rag eval answers --details FILE")
    runs: Runs = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            runs.setdefault(str(row["mode"]), {})[str(row["id"])] = row
        except (ValueError, KeyError, TypeError) as exc:
            raise CorpusError(f"{path}:{n} is not a details row ({exc})") from exc
    if not runs:
        raise CorpusError(f"{path} holds no rows; write it with rag eval answers --details FILE")
    return runs


def paired(
    first: Mapping[str, Mapping[str, Any]],
    second: Mapping[str, Mapping[str, Any]],
    metric: str = "correct",
) -> dict[str, Any]:
    """first - second over the answerable questions both hold, with a bootstrap 95% interval."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}. Currently, it is {metric!r}")
    ids = sorted(i for i in first if i in second and not first[i].get("impossible"))
    a = [float(bool(first[i].get(metric))) for i in ids]
    b = [float(bool(second[i].get(metric))) for i in ids]
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    ci = bootstrap_ci(diffs)
    return {
        "metric": metric,
        "n": len(ids),
        "first": round(sum(a) / len(a), 4) if a else None,
        "second": round(sum(b) / len(b), 4) if b else None,
        "diff": round(sum(diffs) / len(diffs), 4) if diffs else None,
        "ci_low": ci[0] if ci else None,
        "ci_high": ci[1] if ci else None,
        "only_first": sum(d > 0 for d in diffs),
        "only_second": sum(d < 0 for d in diffs),
    }


def compare(
    first: Runs, second: Runs | None, metric: str = "correct", modes: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """One row per comparison: each mode of ``first`` against the same mode of ``second``, or,
    with no ``second``, the modes of ``first`` against each other (auto - always, ...)."""
    rows: list[dict[str, Any]] = []
    if second is not None:
        for mode in modes or sorted(first):
            if mode in first and mode in second:
                rows.append({"compare": f"{mode}: first - second"} | paired(
                    first[mode], second[mode], metric
                ))  # fmt: skip
        if not rows:
            raise CorpusError(
                f"the two files share no mode (first: {', '.join(sorted(first))}; "
                f"second: {', '.join(sorted(second))})"
            )
        return rows
    for a, b in WITHIN:
        if a in first and b in first and (not modes or a in modes or b in modes):
            rows.append({"compare": f"{a} - {b}"} | paired(first[a], first[b], metric))
    if not rows:
        raise CorpusError(
            f"one file with modes {', '.join(sorted(first))} has nothing to pair; run "
            "--mode all, or give a second file"
        )
    return rows
