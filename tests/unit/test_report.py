"""The HTML report: self-contained (nothing fetched by URL), charts drawn, values escaped."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from rag.measure.report import render, write_report

URL_ATTRS = {"src", "href", "data", "action", "xlink:href", "srcset", "poster", "formaction"}


def result(**model_overrides: Any) -> dict[str, Any]:
    """A `run_comparison` result shaped like the real one (see tests/integration/test_compare.py)."""

    def model(role: str, name: str, base: float) -> dict[str, Any]:
        row = {
            "role": role, "model": name, "ttft_ms_p50": base, "total_ms_p50": 4 * base,
            "tokens_per_s": 20.0, "rss_mb": 700.0, "rss_peak_mb": 760.0, "file_mb": 400.0,
            "cold_start_ms": 9000, "contains_gold": 0.5, "f1": 0.31, "abstain_impossible": 1.0,
            "memory_note": None, "file": f"{name}.gguf", "sha256": "abcdef123456",
            "warm_ttft_ms_p50": base / 2,
            "rubric": {"coherence": 4.0, "factuality": 3.5, "conciseness": 4.5, "judged": 2, "missing": 1},
            "judgements": [{"id": "q001", "scores": {"coherence": 4, "factuality": 3, "conciseness": 5},
                            "reason": "ok <b>bold</b>"}],
            "samples": {"ttft_ms": [base, base * 1.2, base * 0.9], "total_ms": [4 * base, 5 * base]},
        }  # fmt: skip
        row.update(model_overrides if role == "slm" else {})
        return row

    return {
        "models": [model("slm", "small<script>", 800.0), model("llm", "large", 2500.0)],
        "run": {
            "settings": {
                "date": "2026-11-30 21:00 UTC",
                "machine": {"cpu_cores": 2, "load_avg_1m": 7.5},
                "qa": {"data": "eval/docs_qa", "split": "test", "questions": 3},
                "models": {"slm": {"base_url": "http://127.0.0.1:9/v1"}},
            },
            "app_rss_mb": 300.0, "app_note": "this process", "escalation_rate": 0.4,
            "escalation_rate_source": "measured", "cascade": {"contains_gold": 0.6, "f1": 0.4,
            "abstain_impossible": 1.0, "escalation_rate": 0.4},
            "tokens": {"small": {"prompt": 500, "completion": 60}, "large": {"prompt": 520, "completion": 80}},
            "volume_per_day": 1000, "days_per_month": 30,
            "costs": [{"profile": "reference", "currency": "units", "strategy": "cascade",
                       "per_answer": 0.1, "per_1k_questions": 100.0, "per_month": 3000.0}],
            "profile_notes": {"reference": "10x"},
            "judge": {"model": "large", "bias": "it judges its own answers"},
            "busy_machine_note": "shared machine",
        },
    }  # fmt: skip


class _Attrs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [(tag, k, v) for k, v in attrs if k in URL_ATTRS]


def test_report_fetches_nothing_by_url() -> None:
    page = render(result())
    parser = _Attrs()
    parser.feed(page)

    assert parser.urls == []  # no src=, href=, data= ... at all
    assert "link" not in parser.tags and "img" not in parser.tags and "iframe" not in parser.tags
    assert not re.search(r"url\(|@import", page, re.I)
    assert "<script" not in page.lower()  # the model name "small<script>" is escaped
    assert "https://" not in page
    # the only http:// is the loopback base_url shown as text in the settings
    assert all(h.startswith("http://127.0.0.1") for h in re.findall(r"http://\S+", page))


def test_report_draws_the_charts_and_tables() -> None:
    page = render(result())

    assert page.count("<svg") == 5  # ttft, total, memory, rubric, gold
    assert page.count("<circle") == 2 * (3 + 2)  # every latency sample is a dot
    assert "small&lt;script&gt;" in page and "ok &lt;b&gt;bold&lt;/b&gt;" in page
    assert "it judges its own answers" in page
    assert "per 1,000 questions" in page and "3,000.00 units" in page
    assert "abcdef123456" in page


def test_unmeasurable_memory_reads_as_such() -> None:
    page = render(
        result(
            rss_mb=None, rss_peak_mb=None, file_mb=None, memory_note="not measurable here: remote"
        )
    )
    assert "not measurable here: remote" in page
    assert ">n/a</text>" in page


def test_write_report_creates_folders(tmp_path: Path) -> None:
    out = write_report(result(), tmp_path / "a" / "b" / "report.html")
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")
