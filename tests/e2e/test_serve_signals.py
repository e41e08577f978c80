"""`rag serve` owns its processes: SIGTERM, SIGHUP or SIGKILL to it leaves nothing running.

`rag serve` runs as a real process with SmolLM2-135M as both embedded models (two llama.cpp
servers), the Chainlit app and rag.procs' lifeline watcher: five processes. The tree is read
from /proc before the signal; within 15 s none of it may run and its three ports must be free.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.models.artifacts import smollm2_path
from tests.conftest import REPO_ROOT
from tests.fake_openai import free_port
from tests.proc_tree import Pid, kill_all, port_free, running, tree, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]
SMOL = "smollm2-135m-instruct"
CORPUS = REPO_ROOT / "tests" / "data" / "mini_corpus"
START_TIMEOUT_S = 180
GONE_WITHIN_S = 15


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture
def started() -> Iterator[list[list[Pid]]]:
    trees: list[list[Pid]] = []
    yield trees
    for pids in trees:
        kill_all(pids)  # only if the test failed: these are the processes this test started


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_rag_serve_leaves_no_process_and_frees_its_ports(
    sig: signal.Signals, tmp_path: Path, started: list[list[Pid]]
) -> None:
    try:
        smollm2_path()
    except Exception as exc:  # installed by `make install`
        pytest.skip(f"SmolLM2 weights not installed: {exc}")
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    ports = {"slm": free_port(), "llm": free_port(), "app": free_port()}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAG__")},
        "RAG__DATA_DIR": str(tmp_path / "data"),
        "RAG__CORPUS__PATH": str(corpus),
        "RAG__CORPUS__UPLOADS_DIR": str(corpus / "uploads"),
        "RAG__RETRIEVAL__RETRIEVER": "bm25",
        "RAG__MODELS__SLM__MODEL": SMOL,
        "RAG__MODELS__LLM__MODEL": SMOL,
        "RAG__MODELS__EMBEDDED__SLM_FILE": SMOL,
        "RAG__MODELS__EMBEDDED__LLM_FILE": SMOL,
        "RAG__MODELS__EMBEDDED__SLM_PORT": str(ports["slm"]),
        "RAG__MODELS__EMBEDDED__LLM_PORT": str(ports["llm"]),
        "RAG__MODELS__EMBEDDED__N_CTX": "512",
        "RAG__MODELS__EMBEDDED__N_THREADS": "1",
        "RAG__SERVER__PORT": str(ports["app"]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "serve"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # as a service manager starts it: no terminal, own group
        )
    started.append([(serve.pid, 0)])
    ready = wait_until(
        lambda: (
            serve.poll() is not None
            or all(
                _answers(u)
                for u in (
                    f"http://127.0.0.1:{ports['slm']}/v1/models",
                    f"http://127.0.0.1:{ports['llm']}/v1/models",
                    f"http://127.0.0.1:{ports['app']}/",
                )
            )
        ),
        START_TIMEOUT_S,
        0.5,
    )
    assert ready and serve.poll() is None, log.read_text(errors="replace")[-3000:]
    pids = tree(serve.pid)
    started.append(pids)
    # serve, its lifeline watcher, two llama.cpp servers, the app
    assert len(pids) == 5, (pids, log.read_text(errors="replace")[-2000:])

    serve.send_signal(sig)

    assert wait_until(lambda: not any(running(p) for p in pids), GONE_WITHIN_S), (
        [p for p in pids if running(p)],
        log.read_text(errors="replace")[-2000:],
    )
    assert wait_until(lambda: all(port_free(p) for p in ports.values()), GONE_WITHIN_S), ports
    code = serve.wait(timeout=5)
    assert code == (-9 if sig == signal.SIGKILL else 128 + sig)
