"""webui/commands.py: slash commands are parsed before anything reaches the model."""

import pytest

from rag.stats import SessionStats
from webui.commands import COMPARE_USAGE, Command, parse_command, stats_figure


@pytest.mark.parametrize(
    ("typed", "command"),
    [
        ("/compare When does Heron launch?", Command("compare", "When does Heron launch?")),
        ("  /compare   two  spaces \n", Command("compare", "two  spaces")),
        ("/compare\non a new line", Command("compare", "on a new line")),
        ("/compare", Command("usage", COMPARE_USAGE)),
        ("/compare   ", Command("usage", COMPARE_USAGE)),
        ("/stats", Command("stats")),
        (" /stats ", Command("stats")),
        ("What is /compare for?", Command("ask", "What is /compare for?")),
        ("/comparisons of ADRs", Command("ask", "/comparisons of ADRs")),
        ("", Command("ask", "")),
    ],
)
def test_parse_command(typed: str, command: Command) -> None:
    assert parse_command(typed) == command


def test_compare_sends_the_question_without_the_command() -> None:
    """The bug this module fixed: "/compare q" reached the models as "/compare q"."""
    command = parse_command("/compare q")
    assert command.kind == "compare" and command.text == "q"


def test_stats_figure_has_a_bar_pair_per_model() -> None:
    stats = SessionStats()
    stats.calls += [("small", 100.0, 900.0), ("small", 120.0, 1100.0), ("large", 300.0, 2000.0)]
    fig = stats_figure(stats)
    assert [bar.name for bar in fig.data] == ["first token (median ms)", "total (median ms)"]
    assert list(fig.data[0].x) == ["small", "large"]
    assert list(fig.data[1].y) == [1000.0, 2000.0]
