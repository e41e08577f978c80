"""Resident memory of local processes, read from /proc (Linux only).

- ``pid_listening_on(port)`` finds the process whose socket listens on a loopback TCP port:
  the socket's inode from /proc/net/tcp{,6}, then the /proc/<pid>/fd link naming that inode.
- ``rss_mb(pid)`` is VmRSS now; ``hwm_mb(pid)`` is VmHWM, the process's lifetime peak.
- ``PeakSampler`` reads VmRSS of some processes every ~100 ms in a thread and keeps the peak.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Self

from rag.procs import StartStop

PROC = Path("/proc")
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (VmRSS), or None if the process is gone or unreadable."""
    kb = _status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024.0


def hwm_mb(pid: int) -> float | None:
    """Peak resident set size over the process's life in MB (VmHWM), or None."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024.0


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if (
                len(parts) > 9
                and parts[3] == _LISTEN
                and int(parts[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(parts[9])
    return inodes


def pid_listening_on(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` (any address), or None if none is visible.

    Processes of other users cannot be inspected; their sockets are not found.
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535. Currently, it is {port}")
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return None
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(entry.name)
        except OSError:  # gone, or another user's process
            continue
    return None


class PeakSampler(StartStop):
    """Samples VmRSS of ``pids`` every ``interval_s`` in a daemon thread; ``peak_mb[pid]`` is the max seen."""

    def __init__(self, pids: Iterable[int], interval_s: float = 0.1) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be above 0. Currently, it is {interval_s}")
        self.pids = list(dict.fromkeys(pids))
        self.interval_s = interval_s
        self.peak_mb: dict[int, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        for pid in self.pids:
            mb = rss_mb(pid)
            if mb is not None and mb > self.peak_mb.get(pid, 0.0):
                self.peak_mb[pid] = mb
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()  # one last reading, so a short run still has a value
