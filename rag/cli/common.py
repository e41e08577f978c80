"""What every `rag` subcommand shares: messages, tables, and the models it may start."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from rag.config import RETRIEVER_NAMES, Config, base_url_for
from rag.errors import ModelError

if TYPE_CHECKING:
    from rag.models.embedded import Role

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RETRIEVER_CHOICES: list[str] = list(RETRIEVER_NAMES)
APP_STOP_TIMEOUT_S = 5.0  # Chainlit's graceful stop, before SIGKILL


def _err(msg: str) -> None:
    print(f"rag: {msg}", file=sys.stderr)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _print_rows(rows: Sequence[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    if not rows:
        return
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(_fmt(r.get(k))) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(_fmt(r.get(k)).ljust(widths[k]) for k in keys))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


# ---- models on demand ----


def _roles_for(modes: Sequence[str]) -> tuple[Role, ...]:
    """The chat models that answering in these escalation modes may call."""
    roles: list[Role] = []
    if any(m != "always" for m in modes):
        roles.append("slm")
    if any(m != "never" for m in modes):
        roles.append("llm")
    return tuple(roles)


@contextlib.contextmanager
def models_on_demand(
    cfg: Config, roles: Sequence[Role], args: argparse.Namespace, *, required: bool = True
) -> Iterator[None]:
    """Reuse the model servers already running, or start the embedded ones for this command.

    Servers started here are stopped when the command ends (and on SIGINT/SIGTERM/SIGHUP);
    `--no-start-models` turns starting off. Only provider `embedded` is ever started. When a
    server cannot start, `required` raises; otherwise the command goes on without it (`rag ask`
    then prints the best passages, as it does when a model is down).
    """
    if getattr(args, "no_start_models", False):
        yield
        return
    from rag.procs import EmbeddedServers

    with contextlib.ExitStack() as stack:
        try:
            servers = stack.enter_context(EmbeddedServers(cfg, roles, progress=_progress))
        except ModelError as exc:
            if required:
                raise
            _progress(f"[warning] could not start the embedded models: {exc}")
            yield
            return
        if servers.started:
            _progress(
                "started for this command and stopped when it ends: "
                + ", ".join(f"{s.alias} ({s.base_url})" for s in servers.started)
                + " (--no-start-models turns this off)"
            )
        yield


def require_models(cfg: Config, roles: Sequence[Role]) -> None:
    """Raise ModelError naming the model and its URL when one of `roles` does not answer."""
    from rag.models.embedded import reachable

    for role in roles:
        mcfg = cfg.models.slm if role == "slm" else cfg.models.llm
        url = base_url_for(mcfg, cfg.models.embedded, role)
        if not reachable(url):
            fix = (
                "start it with `rag models serve` or run without --no-start-models"
                if mcfg.provider == "embedded" and mcfg.base_url is None
                else f"start the {mcfg.provider} server or fix models.{role}.base_url"
            )
            raise ModelError(
                f"the {'small' if role == 'slm' else 'large'} model {mcfg.model} ({role}) does "
                f"not answer at {url}: {fix}",
                kind="refused",
            )
