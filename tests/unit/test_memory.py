"""The memory probe on a real child process: RSS, the listening-port lookup, the peak sampler."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from rag.measure.memory import PeakSampler, hwm_mb, pid_listening_on, rss_mb

# Listens on a port, prints it, then grows to ~50 MB after a line on stdin, and waits.
CHILD = r"""
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.readline()
block = bytearray(50 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1  # touch every page so it is resident
print("grown", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def child() -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield proc, port
    proc.kill()
    proc.wait(timeout=10)


def test_finds_the_process_listening_on_a_port(child: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = child
    assert pid_listening_on(port) == proc.pid


def test_a_port_nobody_listens_on_has_no_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening
        assert pid_listening_on(port) is None


def test_rss_and_peak_see_50_mb_allocated(child: tuple[subprocess.Popen[str], int]) -> None:
    proc, _ = child
    assert proc.stdin is not None and proc.stdout is not None
    before = rss_mb(proc.pid)
    assert before is not None and 1 < before < 100

    with PeakSampler([proc.pid], interval_s=0.05) as sampler:
        proc.stdin.write("grow\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "grown"
        time.sleep(0.3)

    after = rss_mb(proc.pid)
    assert after is not None and after - before > 45
    assert sampler.peak_mb[proc.pid] >= after - 1
    assert sampler.samples >= 3
    hwm = hwm_mb(proc.pid)
    assert hwm is not None and hwm >= after - 1


def test_a_gone_process_reads_as_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    assert rss_mb(proc.pid) is None
    assert rss_mb(os.getpid()) is not None


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"port must be 1-65535\. Currently, it is 0"):
        pid_listening_on(0)
    with pytest.raises(ValueError, match="interval_s must be above 0"):
        PeakSampler([1], interval_s=0)
