"""Paired comparisons of two answer runs (rag eval paired)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag.errors import CorpusError
from rag.measure.eval.paired import compare, load_runs, paired


def _row(qid: str, mode: str, correct: bool, *, impossible: bool = False) -> dict[str, Any]:
    return {"id": qid, "mode": mode, "correct": correct, "impossible": impossible,
            "gold_in_context": None if impossible else True}  # fmt: skip


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_paired_counts_questions_right_in_one_run_only() -> None:
    first = {f"q{i}": _row(f"q{i}", "never", i < 6) for i in range(10)}
    second = {f"q{i}": _row(f"q{i}", "never", 2 <= i < 10) for i in range(10)}
    out = paired(first, second)
    assert (out["n"], out["first"], out["second"]) == (10, 0.6, 0.8)
    assert out["diff"] == pytest.approx(-0.2)
    assert (out["only_first"], out["only_second"]) == (2, 4)
    assert out["ci_low"] < out["diff"] < out["ci_high"]


def test_unanswerable_and_unshared_questions_are_left_out() -> None:
    first = {"a": _row("a", "never", True), "b": _row("b", "never", True, impossible=True),
             "c": _row("c", "never", True)}  # fmt: skip
    second = {"a": _row("a", "never", False), "b": _row("b", "never", False, impossible=True)}
    out = paired(first, second)
    assert out["n"] == 1 and out["diff"] == 1.0


def test_identical_runs_differ_by_exactly_nothing() -> None:
    run = {f"q{i}": _row(f"q{i}", "auto", i % 3 == 0) for i in range(30)}
    out = paired(run, run)
    assert (out["diff"], out["ci_low"], out["ci_high"]) == (0.0, 0.0, 0.0)


def test_one_file_pairs_its_modes(tmp_path: Path) -> None:
    rows = [_row(f"q{i}", m, ok) for i in range(8)
            for m, ok in (("never", i < 2), ("auto", i < 4), ("always", i < 6))]  # fmt: skip
    out = compare(load_runs(_write(tmp_path / "d.jsonl", rows)), None)
    assert [r["compare"] for r in out] == ["auto - always", "auto - never", "always - never"]
    assert [r["diff"] for r in out] == [-0.25, 0.25, 0.5]


def test_two_files_pair_the_same_mode(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl", [_row(f"q{i}", "never", i < 3) for i in range(6)])
    b = _write(tmp_path / "b.jsonl", [_row(f"q{i}", "never", i < 5) for i in range(6)])
    (out,) = compare(load_runs(a), load_runs(b))
    assert out["compare"] == "never: first - second" and out["only_second"] == 2


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_runs(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "q1", "mode": "never"}\nnot json\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2"):
        load_runs(bad)
    never = load_runs(_write(tmp_path / "n.jsonl", [_row("q1", "never", True)]))
    always = load_runs(_write(tmp_path / "a.jsonl", [_row("q1", "always", True)]))
    with pytest.raises(CorpusError, match="share no mode"):
        compare(never, always)
    with pytest.raises(CorpusError, match="nothing to pair"):
        compare(never, None)
    with pytest.raises(ValueError, match="metric"):
        paired(never["never"], never["never"], "f1")


def test_the_command_prints_one_json_line_per_comparison(tmp_path: Path) -> None:
    rows = [_row(f"q{i}", m, i < k) for i in range(5) for m, k in (("never", 1), ("always", 4))]
    path = _write(tmp_path / "d.jsonl", rows)
    out = subprocess.run(
        [sys.executable, "-m", "rag.cli", "eval", "paired", str(path), "--json"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    (line,) = [json.loads(x) for x in out.stdout.splitlines()]
    assert line["compare"] == "always - never" and line["diff"] == 0.6 and line["n"] == 5
    missing = subprocess.run(
        [sys.executable, "-m", "rag.cli", "eval", "paired", str(tmp_path / "none.jsonl")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
