"""Per-session figures for the demo view: latency per model and the escalation rate."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from rag.types import Done


def percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile, 1 <= q <= 99, interpolated linearly (statistics' inclusive method,
    numpy's default); the value itself for fewer than two, 0.0 for none."""
    if not 1 <= q <= 99:
        raise ValueError(f"q must be between 1 and 99. Currently, q is {q}")
    if len(values) < 2:
        return float(values[0]) if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def p95(values: Sequence[float]) -> float:
    """The 95th percentile; see percentile()."""
    return percentile(values, 95)


def bootstrap_ci(
    values: Sequence[float], *, rounds: int = 2000, seed: int = 7, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean; None for an empty sample."""
    if not values:
        return None
    import numpy as np

    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    means = data[rng.integers(0, len(data), size=(rounds, len(data)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return round(float(lo), 4), round(float(hi), 4)


@dataclass
class SessionStats:
    """Accumulates one row per model call of every answer in a chat session."""

    calls: list[tuple[str, float, float]] = field(default_factory=list)  # model, ttft, total
    answers: int = 0
    escalated: int = 0
    cost: float = 0.0

    def add(self, done: Done) -> None:
        self.answers += 1
        self.escalated += done.metrics.escalated
        self.cost += done.metrics.cost
        for _stage, usage in done.metrics.stages:
            self.calls.append((usage.model, usage.ttft_ms, usage.total_ms))

    @property
    def escalation_rate(self) -> float:
        return self.escalated / self.answers if self.answers else 0.0

    def per_model(self) -> dict[str, dict[str, float]]:
        """Median time to first token and total time per model, with the call count."""
        out: dict[str, dict[str, float]] = {}
        for model in dict.fromkeys(m for m, _, _ in self.calls):
            ttfts = [t for m, t, _ in self.calls if m == model]
            totals = [t for m, _, t in self.calls if m == model]
            out[model] = {
                "calls": len(totals),
                "ttft_ms": statistics.median(ttfts),
                "total_ms": statistics.median(totals),
            }
        return out

    def summary(self) -> str:
        """A few lines of Markdown."""
        if not self.answers:
            return "No answers yet in this session."
        lines = [
            f"**{self.answers} answers**, {self.escalated} escalated "
            f"({self.escalation_rate:.0%}), total cost {self.cost:.4f}",
            "",
            "| model | calls | median first token | median total |",
            "|---|---|---|---|",
        ]
        for model, row in self.per_model().items():
            lines.append(
                f"| {model} | {int(row['calls'])} | {row['ttft_ms']:.0f} ms | {row['total_ms']:.0f} ms |"
            )
        return "\n".join(lines)
