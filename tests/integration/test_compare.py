"""`rag compare --json --report` in a subprocess against FakeOpenAI, on a small QA set of the mini corpus.

The models are remote here (openai-compatible at the fake's URL), so memory must read "not
measurable here" and --cold must start nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fake_openai import FakeOpenAI, echo_context, message_text
from tests.integration.test_cli import LLM, SLM, rag_env, run_rag

QUESTIONS = [  # id, question, gold answers, split (None: no field -> test)
    ("m1", "How much are meal expenses reimbursed per day?", ["45 euros"], None),
    ("m2", "Within how many days must receipts be uploaded?", ["30 days"], "test"),
    ("m3", "What is the office dress code for Fridays?", [], "test"),  # not in the corpus
    ("m4", "How many weeks of parental leave do employees get?", ["16 weeks"], "dev"),
]
REQUIRED = {"model", "ttft_ms_p50", "total_ms_p50", "tokens_per_s", "rss_mb", "file_mb",
            "rubric", "contains_gold"}  # fmt: skip


def _qa(folder: Path) -> Path:
    folder.mkdir()
    with open(folder / "queries.jsonl", "w") as q, open(folder / "answers.jsonl", "w") as a:
        for qid, text, answers, split in QUESTIONS:
            q.write(json.dumps({"_id": qid, "text": text}) + "\n")
            row: dict[str, Any] = {"_id": qid, "answers": answers, "is_impossible": not answers}
            if split:
                row["split"] = split
            a.write(json.dumps(row) + "\n")
    return folder


def _model_reply(request: dict[str, Any]) -> str:
    """Answers echo the first passage; the judge grades in JSON, except on the dress-code question."""
    text = "\n".join(message_text(m) for m in request.get("messages", []))
    if "You grade an answer" not in text:
        return echo_context(request)
    if "dress code" in text:
        return "I would rather not grade this one."  # unparsable: counted as missing
    return '{"coherence": 4, "factuality": 5, "conciseness": 3, "reason": "Supported by [1]."}'


@pytest.fixture
def fake(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.set_default(SLM, _model_reply)
    fake_openai.set_default(LLM, _model_reply)
    return fake_openai


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_compare_json_and_report_with_remote_models(fake: FakeOpenAI, tmp_path: Path) -> None:
    env = rag_env(tmp_path, fake.base_url, fake.base_url)
    report = tmp_path / "out" / "report.html"

    proc = run_rag(
        ["compare", "--data", str(_qa(tmp_path / "qa")), "--json", "--report", str(report)],
        env,
        tmp_path,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stderr
    *models, run = _lines(proc.stdout)
    assert [m["kind"] for m in models] == ["model", "model"] and run["kind"] == "run"
    assert [m["model"] for m in models] == [SLM, LLM]
    for m in models:
        assert set(m) >= REQUIRED, REQUIRED - set(m)
        assert m["calls"] == 3  # m1, m2, m3: the test split (m1 has no split field)
        assert m["ttft_ms_p50"] > 0 and m["total_ms_p50"] >= m["ttft_ms_p50"]
        assert m["rss_mb"] is None and m["file_mb"] is None and m["rss_peak_mb"] is None
        assert m["memory_note"].startswith("not measurable here:")
        assert fake.base_url in m["memory_note"]
        assert "cold_start_ms" not in m  # only with --cold
        assert m["rubric"] == {
            "coherence": 4.0, "factuality": 5.0, "conciseness": 3.0, "judged": 2, "missing": 1
        }  # fmt: skip
        assert m["contains_gold"] == 1.0  # echo_context quotes the right passage
        assert m["abstain_impossible"] is not None
    assert run["escalation_rate_source"].startswith("measured: `auto` on the same 3 questions")
    assert 0 <= run["escalation_rate"] <= 1
    assert len(run["costs"]) == 3 * 3  # local, reference, cloud x small, large, cascade
    assert run["app_rss_mb"] > 10
    assert "judges its own answers" in run["judge"]["bias"]
    judge_calls = [r for r in fake.requests_for(LLM) if "You grade an answer" in r.text]
    assert len(judge_calls) == 6 and all(r.body["temperature"] == 0 for r in judge_calls)

    page = report.read_text(encoding="utf-8")
    assert page.count("<svg") == 5 and "not measurable here" in page
    latest = tmp_path / "data" / "reports" / "latest.html"
    assert latest.read_text(encoding="utf-8") == page


def test_compare_given_rate_one_profile_dev_split_and_cold_with_nothing_to_start(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    env = rag_env(tmp_path, fake.base_url, fake.base_url)

    proc = run_rag(
        ["compare", "--data", str(_qa(tmp_path / "qa")), "--json", "--split", "dev",
         "--escalation-rate", "0.25", "--cost-profile", "reference", "--no-judge", "--cold",
         "--volume-per-day", "100", "--rounds", "0"],
        env, tmp_path, timeout=120,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    *models, run = _lines(proc.stdout)
    assert all(m["calls"] == 1 and m["rubric"] is None for m in models)
    assert all(m["warm_ttft_ms_p50"] is None for m in models)  # --rounds 0: no warm prompts
    assert all(
        m["cold_start_ms"] is None and "not an embedded model" in m["cold_note"] for m in models
    )
    assert (
        run["escalation_rate"] == 0.25
        and run["escalation_rate_source"] == "given with --escalation-rate"
    )
    assert [c["profile"] for c in run["costs"]] == ["reference"] * 3
    cascade = next(c for c in run["costs"] if c["strategy"] == "cascade")
    small = next(c for c in run["costs"] if c["strategy"] == "small-only")
    large = next(c for c in run["costs"] if c["strategy"] == "large-only")
    assert cascade["per_answer"] == pytest.approx(small["per_answer"] + 0.25 * large["per_answer"])
    assert cascade["per_month"] == pytest.approx(cascade["per_answer"] * 100 * 30)
    assert run["cascade"] is None  # no auto run when the rate is given


def test_unknown_cost_profile_is_a_usage_error(fake: FakeOpenAI, tmp_path: Path) -> None:
    env = rag_env(tmp_path, fake.base_url, fake.base_url)

    proc = run_rag(
        ["compare", "--data", str(_qa(tmp_path / "qa")), "--cost-profile", "gold", "--no-judge",
         "--escalation-rate", "0"],
        env, tmp_path, timeout=120,
    )  # fmt: skip

    assert proc.returncode == 2
    assert (
        "--cost-profile 'gold' is not defined; choose from config, local, reference, cloud"
        in proc.stderr
    )
