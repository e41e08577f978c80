"""The servers under load: the fake model server and `chainlit run app.py`, both owned."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from rag.errors import RagError
from rag.measure.fake_openai import free_port
from rag.measure.load.client import STOP_TIMEOUT_S
from rag.procs import log_tail, spawn, stop

REPO_ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 120.0  # chainlit imports the app, which builds the assistant


@contextlib.contextmanager
def _server(
    cmd: list[str], env: dict[str, str], log: Path, url: str, what: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `cmd` from the repository root, wait for HTTP 200 on `url`, stop it on exit."""
    proc = spawn(cmd, cwd=REPO_ROOT, env=env, log=log)  # owned: killed with us (rag.procs)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no answer yet"
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    raise RagError(
                        f"{what} exited with code {proc.returncode} while starting; "
                        f"log tail:\n{log_tail(log, 30)}"
                    )
                try:
                    status = client.get(url).status_code
                    if status == 200:
                        break
                    last = f"HTTP {status}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise RagError(
                        f"{what} did not answer HTTP 200 on {url} within {START_TIMEOUT_S:g} s "
                        f"({last}); log tail:\n{log_tail(log, 30)}"
                    )
                time.sleep(0.25)
        yield proc
    finally:
        stop(proc, STOP_TIMEOUT_S)


@contextlib.contextmanager
def running_app(
    token_delay_s: float,
    port: int | None,
    workdir: Path,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """The fake model server and `chainlit run app.py` in front of it; yields the app's URL."""
    if not (REPO_ROOT / "app.py").is_file():
        raise RagError(
            f"`rag bench load` needs a checkout of the repository: {REPO_ROOT / 'app.py'} is "
            "missing. Run it from a git clone, not an installed package."
        )
    spec = {"default": "@echo-context", "token_delay_s": token_delay_s}
    script = workdir / "fake_openai_script.json"
    script.write_text(json.dumps({"models": {"*": spec}}), encoding="utf-8")  # any model name
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    fake_port = free_port()
    fake_cmd = [sys.executable, "-m", "rag.measure.fake_openai", "--port", str(fake_port)]
    fake_url = f"http://127.0.0.1:{fake_port}/v1"
    with _server(
        [*fake_cmd, "--script", str(script)],
        env,
        workdir / "fake_openai.log",
        f"{fake_url}/models",
        "the fake model server",
    ):
        app_port = port or free_port()
        app_env = {
            **env,
            "RAG__MODELS__SLM__BASE_URL": fake_url,
            "RAG__MODELS__LLM__BASE_URL": fake_url,
            "RAG__DATA_DIR": str(workdir / "data"),
            "RAG__RETRIEVAL__RETRIEVER": "bm25",
            "TRANSFORMERS_OFFLINE": "1",
            **(extra_env or {}),
        }
        app_cmd = [sys.executable, "-m", "chainlit", "run", "app.py", "--headless"]
        url = f"http://127.0.0.1:{app_port}"
        with _server(
            [*app_cmd, "--host", "127.0.0.1", "--port", str(app_port)],
            app_env,
            workdir / "chainlit.log",
            f"{url}/",
            "chainlit",
        ):
            yield url
