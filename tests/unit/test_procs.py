"""rag.procs with real processes: an owner that is signalled or killed leaves no child behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.proc_tree import Pid, kill_all, running, tree, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# The owner: starts a child (which starts a grandchild in its group) with rag.procs, prints the
# child's pid, and waits; SIGTERM/SIGHUP unwind through stop_signals as `rag serve` does.
OWNER = textwrap.dedent(
    """
    import sys, time
    from rag.procs import Owned, Terminated, stop_signals
    child = sys.argv[1]
    with stop_signals():
        try:
            with Owned(timeout_s=2.0) as owned:
                proc = owned.start([sys.executable, "-c", child])
                print(proc.pid, flush=True)
                time.sleep(120)
        except Terminated as exc:
            sys.exit(128 + exc.signum)
    """
)
SLEEPER = (
    "import subprocess, sys, time;"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
    "time.sleep(120)"
)
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"


def _start_owner(child: str) -> tuple[subprocess.Popen[str], list[Pid]]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, child],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # signals sent to the test's group never reach it
    )
    assert owner.stdout is not None
    child_pid = int(owner.stdout.readline())
    # wait for the grandchild (if any) to appear, so the tree is complete before the signal
    wait_until(lambda: len(tree(child_pid)) >= (2 if "Popen" in child else 1), 10)
    return owner, tree(owner.pid)


@pytest.fixture
def owners() -> Iterator[list[list[Pid]]]:
    trees: list[list[Pid]] = []
    yield trees
    for pids in trees:
        kill_all(pids)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL])
def test_owner_stopped_or_killed_leaves_no_process(
    sig: signal.Signals, owners: list[list[Pid]]
) -> None:
    owner, pids = _start_owner(SLEEPER)
    owners.append(pids)
    assert len(pids) == 4, pids  # owner, its lifeline watcher, child, grandchild

    owner.send_signal(sig)
    code = owner.wait(timeout=15)

    # SIGKILL: the kernel kills the child (parent-death signal), the watcher its group.
    assert wait_until(lambda: not any(running(p) for p in pids), 10), [
        p for p in pids if running(p)
    ]
    # SIGINT: KeyboardInterrupt unwinds the owner, which then dies of SIGINT as Python does.
    expected = {signal.SIGKILL: -9, signal.SIGINT: -2}.get(sig, 128 + sig)
    assert code == expected


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(
    owners: list[list[Pid]],
) -> None:
    owner, pids = _start_owner(STUBBORN)
    owners.append(pids)

    owner.send_signal(signal.SIGTERM)

    assert owner.wait(timeout=10) == 128 + signal.SIGTERM
    assert wait_until(lambda: not any(running(p) for p in pids), 5)  # the watcher exits last


def test_spawn_writes_the_log_and_stop_returns_the_exit_code(tmp_path: Path) -> None:
    from rag.procs import spawn, stop

    log = tmp_path / "logs" / "child.log"
    proc = spawn(
        [sys.executable, "-c", "print('hello', flush=True); import time; time.sleep(60)"], log=log
    )
    assert wait_until(lambda: log.exists() and "hello" in log.read_text(), 10)

    assert stop(proc, timeout_s=5) == -signal.SIGTERM
    assert proc.poll() is not None
