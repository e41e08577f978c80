"""Every list of choices is one Literal in rag/config.py: the UI, the CLI and the registry agree."""

import argparse
from collections.abc import Iterator
from typing import get_args

from rag.cli import build_parser
from rag.config import Mode, Provider, RetrieverName, Role, Strategy
from rag.retrieval import RETRIEVERS, STORES
from webui import settings


def subcommand(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def choices(parser: argparse.ArgumentParser, flag: str) -> list[str]:
    action = next(a for a in parser._actions if flag in a.option_strings)
    assert action.choices is not None
    return list(action.choices)


def panel(widget_id: str) -> list[str]:
    from rag.config import Config

    widgets = settings.settings_panel(Config(), {}, "auto").inputs
    widget = next(w for w in widgets if w.id == widget_id)
    return list(widget.values)


def test_retriever_names() -> None:
    names = list(get_args(RetrieverName))
    assert list(RETRIEVERS) == names
    assert all(list(registry) == names for registry in STORES.values())
    assert panel("retriever") == names
    cli = build_parser()
    assert choices(subcommand(cli, "ask"), "--retriever") == names
    assert choices(subcommand(cli, "index"), "--retriever") == [*names, "all"]
    assert choices(subcommand(cli, "eval", "retrieval"), "--retriever") == [*names, "all"]


def test_modes_and_strategies() -> None:
    cli = build_parser()
    assert panel("mode") == choices(subcommand(cli, "ask"), "--mode") == list(get_args(Mode))
    assert [p[0] for p in settings.PROFILES.values()] == list(get_args(Mode))
    strategies = list(get_args(Strategy))
    assert panel("strategy") == choices(subcommand(cli, "ask"), "--strategy") == strategies


def test_roles_and_providers_are_literals() -> None:
    assert get_args(Role) == ("slm", "llm")
    assert "embedded" in get_args(Provider)


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under ``parser`` (itself first), with its command path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_command_prints_its_help() -> None:
    # argparse formats help with %: a bare "95% interval" crashed `rag eval --help`.
    found = list(_parsers(build_parser()))
    assert len(found) > 10
    for path, parser in found:
        assert parser.format_help().startswith("usage: rag"), path
