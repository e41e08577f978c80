"""The cost story: measured tokens per answer times a price profile, per answer, per 1k, per month.

Prices are per 1k tokens (``rag.yaml`` costs.profiles). The cascade always pays for the small
model's draft and, at the escalation rate, for the large model's answer as well:
``cascade = small + rate * large``. Escalations decided before the draft (weak context) skip
the draft, so this slightly over-counts the cascade; it never under-counts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rag.config import CostProfile, Price

STRATEGIES = ("small-only", "large-only", "cascade")


@dataclass(frozen=True)
class Tokens:
    """Mean prompt and completion tokens of one answer by one model."""

    prompt: float
    completion: float


def call_cost(tokens: Tokens, price: Price) -> float:
    """Cost of one call at ``price`` (per 1k tokens)."""
    return (tokens.prompt * price.in_per_1k + tokens.completion * price.out_per_1k) / 1000.0


def per_answer(
    profile: CostProfile, small: Tokens, large: Tokens, escalation_rate: float
) -> dict[str, float]:
    """Cost of one answer for small-only, large-only and the cascade at ``escalation_rate``."""
    if not 0.0 <= escalation_rate <= 1.0:
        raise ValueError(
            f"escalation_rate must be between 0 and 1. Currently, it is {escalation_rate}"
        )
    s = call_cost(small, profile.slm)
    g = call_cost(large, profile.llm)
    return {"small-only": s, "large-only": g, "cascade": s + escalation_rate * g}


def cost_table(
    profiles: Mapping[str, CostProfile],
    small: Tokens,
    large: Tokens,
    escalation_rate: float,
    *,
    volume_per_day: int,
    days_per_month: int,
) -> list[dict[str, Any]]:
    """One row per profile and strategy: per answer, per 1,000 questions and per month."""
    if volume_per_day < 0:
        raise ValueError(f"volume_per_day must be 0 or more. Currently, it is {volume_per_day}")
    rows = []
    for name, profile in profiles.items():
        for strategy, cost in per_answer(profile, small, large, escalation_rate).items():
            rows.append(
                {
                    "profile": name,
                    "currency": profile.currency,
                    "strategy": strategy,
                    "per_answer": cost,
                    "per_1k_questions": cost * 1000,
                    "per_month": cost * volume_per_day * days_per_month,
                }
            )
    return rows
