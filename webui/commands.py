"""Slash commands: `/stats` (this session's figures) and `/compare question` (both models)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import chainlit as cl
import plotly.graph_objects as go
from chainlit.config import config as chainlit_config

from rag.stats import SessionStats

COMPARE_USAGE = "Usage: `/compare your question`"
NO_ANSWERS_YET = "No answers yet in this session: ask something first."
LATEST_REPORT_ROUTE = "/reports/latest"  # <data_dir>/reports/latest.html, written by `rag compare`


def latest_report(data_dir: Path) -> Path:
    """Where `rag compare` leaves its latest small-vs-large report."""
    return data_dir / "reports" / "latest.html"


def report_note(data_dir: Path, root_path: str | None = None) -> str:
    """A line linking the latest small-vs-large report, or saying how to make one."""
    if latest_report(data_dir).is_file():
        root = chainlit_config.run.root_path if root_path is None else root_path
        url = root + LATEST_REPORT_ROUTE
        return f"\n\n📊 [Small vs large model: the latest report]({url}) (from `rag compare`)"
    return "\n\nNo small-vs-large report yet: run `rag compare` to make one."


@dataclass(frozen=True)
class Command:
    """What a chat message asks for: an answer (maybe in compare mode), the stats, or help."""

    kind: Literal["ask", "compare", "stats", "usage"]
    text: str = ""  # the question to ask, or the usage line to show


def parse_command(content: str) -> Command:
    """Read a chat message: `/stats`, `/compare <question>`, or a question as typed."""
    text = content.strip()
    if text == "/stats":
        return Command("stats")
    words = text.split(maxsplit=1)
    if words and words[0] == "/compare":
        question = words[1].strip() if len(words) > 1 else ""
        return Command("compare", question) if question else Command("usage", COMPARE_USAGE)
    return Command("ask", content)


def stats_figure(stats: SessionStats) -> go.Figure:
    """Median first-token and total latency per model, grouped bars."""
    per = stats.per_model()
    fig = go.Figure(
        [
            go.Bar(
                name="first token (median ms)", x=list(per), y=[r["ttft_ms"] for r in per.values()]
            ),
            go.Bar(name="total (median ms)", x=list(per), y=[r["total_ms"] for r in per.values()]),
        ]
    )
    fig.update_layout(
        barmode="group",
        title=f"Latency per model · escalation rate {stats.escalation_rate:.0%}",
        yaxis_title="ms",
        height=360,
    )
    return fig


async def show_stats(data_dir: Path) -> None:
    """The session's summary and chart, or a hint when nothing was answered yet."""
    stats = cl.user_session.get("stats")
    if not isinstance(stats, SessionStats) or not stats.answers:
        await cl.Message(content=NO_ANSWERS_YET + report_note(data_dir)).send()
        return
    await cl.Message(
        content=stats.summary() + report_note(data_dir),
        elements=[cl.Plotly(name="session chart", figure=stats_figure(stats), display="inline")],
    ).send()
