"""rag/measure/soak.py's memory figures: what "after warm-up" means and how a leak shows."""

from __future__ import annotations

import pytest

from rag.measure.soak import after_warmup, slope_per_min


def test_a_plateau_after_warm_up_has_no_growth_and_no_slope() -> None:
    # 30 minutes sampled every 15 s: rises for 3 minutes, then flat at 400 MiB.
    timeline = [(t, min(300 + t / 1.8, 400.0), 30) for t in range(0, 1801, 15)]
    got = after_warmup(timeline, warm_min=5)
    assert got["rss_warm_at_min"] == 5.0
    assert got["rss_warm_mb"] == 400.0
    assert got["growth_after_warmup"] == 0.0
    assert got["rss_slope_after_warm_mib_per_min"] == 0.0


def test_a_leak_keeps_its_slope_after_warm_up() -> None:
    timeline = [(float(t), 300 + 2 * t / 60, 30) for t in range(0, 1801, 15)]  # 2 MiB/min
    got = after_warmup(timeline, warm_min=5)
    assert got["rss_warm_mb"] == 310.0
    assert got["growth_after_warmup"] == pytest.approx(50 / 310 * 100, abs=0.01)
    assert got["rss_slope_after_warm_mib_per_min"] == pytest.approx(2.0)


def test_a_short_run_is_warm_at_half_time_and_an_empty_one_has_no_figures() -> None:
    timeline = [(float(t), 300.0, 30) for t in range(0, 241, 15)]  # 4 minutes
    assert after_warmup(timeline, warm_min=5)["rss_warm_at_min"] == 2.0
    assert after_warmup([], warm_min=5)["rss_warm_mb"] is None
    assert slope_per_min([(0.0, 1.0)]) is None
