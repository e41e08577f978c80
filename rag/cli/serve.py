"""`rag index`, `rag models build|serve` and `rag serve`: build and run what the chat needs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rag.config import Config
from rag.errors import ConfigError, RagError

if TYPE_CHECKING:
    pass
from rag.cli.common import APP_STOP_TIMEOUT_S, RETRIEVER_CHOICES, _err, _progress


def cmd_index(cfg: Config, args: argparse.Namespace) -> int:
    from rag.index import IndexManager

    names = (
        RETRIEVER_CHOICES
        if args.retriever == "all"
        else [args.retriever or cfg.retrieval.retriever]
    )
    manager = IndexManager(cfg, _progress)
    failed = 0
    for name in names:
        try:
            _, status = manager.open(name, force=args.force)
        except RagError as exc:
            _err(f"{name}: {exc}")
            failed += 1
            continue
        print(f"{status.message} [{status.seconds:.2f} s]")
        for doc, reason in sorted(status.skipped.items()):
            print(f"  skipped {doc}: {reason}")
        for warning in status.warnings:
            print(f"  warning: {warning}")
    return 1 if failed else 0


def cmd_models_build(cfg: Config, args: argparse.Namespace) -> int:
    from rag.models.artifacts import build_all

    summary = build_all(cfg, chat_models=not args.embedding_only, progress=_progress)
    if args.foundry or args.foundry_model:
        from rag.models.foundry_build import build_foundry

        summary["foundry"] = build_foundry(cfg.data_dir, args.foundry_model, progress=_progress)
    print(json.dumps(summary, indent=1, default=str) if args.json else "models ready")
    return 0


def cmd_models_serve(cfg: Config, args: argparse.Namespace) -> int:
    """Run the embedded servers until Ctrl-C, SIGTERM or SIGHUP; reused ones are left alone."""
    import time

    from rag.procs import EmbeddedServers

    with EmbeddedServers(cfg, progress=_progress) as servers:
        if not servers.specs:
            _err("no model uses the embedded provider; nothing to serve")
            return 0
        if not servers.started:
            _progress("every embedded model is already served; nothing to start")
            return 0
        if cfg.models.embedded.warm_up:
            from rag.models.warmup import warm_up

            warm_up(servers.specs, _progress)
        _progress("embedded models are up; Ctrl-C (or SIGTERM/SIGHUP) stops them")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def check_bind(host: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse a non-loopback address unless password authentication is configured."""
    env = os.environ if environ is None else environ
    if host in ("127.0.0.1", "localhost", "::1"):
        return
    if not env.get("CHAINLIT_AUTH_SECRET") or not env.get("RAG_USERS"):
        raise ConfigError(
            f"refusing to bind {host} without authentication: anyone on the network could read "
            "your documents. Set CHAINLIT_AUTH_SECRET (run `chainlit create-secret`) and RAG_USERS "
            "(user:password pairs), or keep the default 127.0.0.1"
        )


def cmd_serve(cfg: Config, args: argparse.Namespace) -> int:
    """Start the embedded model servers (if configured) and the Chainlit app; stop both together."""
    from rag.index import IndexManager
    from rag.procs import EmbeddedServers, Owned

    host = args.host or cfg.server.host
    port = args.port or cfg.server.port
    check_bind(host)
    status = IndexManager(cfg, _progress).open(cfg.retrieval.retriever)[1]
    _progress(status.message)
    # Every child is ours: stopped on Ctrl-C, SIGTERM and SIGHUP (main() turns those into
    # exceptions), killed by the kernel if this process is SIGKILLed (Linux). Reused model
    # servers are left running.
    with (
        EmbeddedServers(cfg, progress=_progress) as servers,
        Owned(timeout_s=APP_STOP_TIMEOUT_S) as owned,
    ):
        if cfg.models.embedded.warm_up:
            from rag.models.warmup import warm_up

            warm_up(servers.specs, _progress)  # the first question must not pay the cold load
        cmd = [sys.executable, "-m", "chainlit", "run", "app.py", "--headless",
               "--host", host, "--port", str(port)]  # fmt: skip
        _progress(f"chat: http://{host}:{port}  (Ctrl-C stops the app and the models)")
        proc = owned.start(cmd)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return 0
