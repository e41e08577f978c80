"""The cost story: tokens x prices per profile, the cascade at its escalation rate, profiles in config."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import CostProfile, Price, apply_cost_profile, load_config
from rag.costs import Tokens, call_cost, cost_table, per_answer
from rag.errors import ConfigError

PROFILE = CostProfile(
    slm=Price(in_per_1k=0.1, out_per_1k=0.2), llm=Price(in_per_1k=1.0, out_per_1k=2.0)
)
SMALL = Tokens(prompt=500, completion=100)  # 0.05 + 0.02 = 0.07
LARGE = Tokens(prompt=600, completion=150)  # 0.6 + 0.3 = 0.9


def test_call_cost_is_per_1k_tokens() -> None:
    assert call_cost(SMALL, PROFILE.slm) == pytest.approx(0.07)
    assert call_cost(LARGE, PROFILE.llm) == pytest.approx(0.9)


def test_cascade_pays_the_draft_always_and_the_large_model_at_the_rate() -> None:
    costs = per_answer(PROFILE, SMALL, LARGE, escalation_rate=0.25)

    assert costs["small-only"] == pytest.approx(0.07)
    assert costs["large-only"] == pytest.approx(0.9)
    assert costs["cascade"] == pytest.approx(0.07 + 0.25 * 0.9)


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_cascade_at_the_edges(rate: float) -> None:
    costs = per_answer(PROFILE, SMALL, LARGE, escalation_rate=rate)
    assert costs["cascade"] == pytest.approx(0.07 + rate * 0.9)


def test_escalation_rate_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError, match=r"between 0 and 1\. Currently, it is 1\.5"):
        per_answer(PROFILE, SMALL, LARGE, escalation_rate=1.5)


def test_table_per_1k_and_per_month() -> None:
    rows = cost_table(
        {"ref": PROFILE, "local": CostProfile()},
        SMALL,
        LARGE,
        0.5,
        volume_per_day=2000,
        days_per_month=30,
    )

    assert [(r["profile"], r["strategy"]) for r in rows] == [
        ("ref", "small-only"), ("ref", "large-only"), ("ref", "cascade"),
        ("local", "small-only"), ("local", "large-only"), ("local", "cascade"),
    ]  # fmt: skip
    cascade = rows[2]
    assert cascade["per_answer"] == pytest.approx(0.07 + 0.45)
    assert cascade["per_1k_questions"] == pytest.approx(520.0)
    assert cascade["per_month"] == pytest.approx(0.52 * 2000 * 30)
    assert all(r["per_month"] == 0 for r in rows[3:])


def test_shipped_profiles_and_reference_prices(repo_root: Path) -> None:
    cfg = load_config(repo_root / "rag.yaml", environ={})
    assert {"local", "reference", "cloud"} <= set(cfg.costs.profiles)
    assert cfg.costs.profile == "config"  # the models' own prices stay in force by default

    priced = apply_cost_profile(cfg, "reference")

    assert (priced.models.slm.price_in_per_1k, priced.models.slm.price_out_per_1k) == (0.1, 0.2)
    assert (priced.models.llm.price_in_per_1k, priced.models.llm.price_out_per_1k) == (1.0, 2.0)
    assert priced.costs.profile == "reference"
    assert apply_cost_profile(cfg, "config") is cfg


def test_profile_in_config_overrides_the_model_prices() -> None:
    cfg = load_config(None, environ={"RAG__COSTS__PROFILE": "cloud"})
    assert cfg.models.llm.price_out_per_1k == 0.01


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"costs.profile 'nope' is not defined; choose from config, local"
    ):
        load_config(None, environ={"RAG__COSTS__PROFILE": "nope"})
    with pytest.raises(
        ConfigError, match=r"cost profile 'gold' is not defined; choose from config"
    ):
        apply_cost_profile(load_config(None, environ={}), "gold")


def test_a_profile_added_in_yaml_keeps_the_shipped_ones(tmp_path: Path) -> None:
    p = tmp_path / "rag.yaml"
    p.write_text(
        "costs:\n  profile: mine\n  profiles:\n    mine:\n      llm: {in_per_1k: 3, out_per_1k: 4}\n"
    )

    cfg = load_config(p, environ={})

    assert set(cfg.costs.profiles) >= {"mine", "local", "reference", "cloud"}
    assert cfg.models.llm.price_in_per_1k == 3
    assert cfg.models.slm.price_in_per_1k == 0
