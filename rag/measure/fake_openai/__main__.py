"""Run the fake standalone: python -m rag.measure.fake_openai --port N --script F."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from rag.measure.fake_openai.server import FakeOpenAI


def main(argv: list[str] | None = None) -> int:
    """Run the fake until SIGINT/SIGTERM: python -m rag.measure.fake_openai --port N --script F."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--script", type=Path, help="JSON script; without it every model says OK")
    parser.add_argument("--api-key", help="require this bearer token")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    kwargs: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "api_key": args.api_key,
        "verbose": args.verbose,
    }
    try:
        fake = (
            FakeOpenAI.from_script(args.script, **kwargs) if args.script else FakeOpenAI(**kwargs)
        )
    except (OSError, ValueError) as exc:
        print(f"fake-openai: cannot load script {args.script}: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with fake:
        models = ", ".join(fake.models) or "any model"
        print(f"fake-openai listening on {fake.base_url} ({models})", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
