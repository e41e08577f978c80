"""Reading process trees from /proc for the process-ownership tests (Linux only)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

Pid = tuple[int, int]  # (pid, start time in clock ticks): a pid reused later is another process


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of pid, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def tree(root: int) -> list[Pid]:
    """`root` and every descendant, found by parent pid in /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents.setdefault(st[1], []).append(int(entry))
    out: list[Pid] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        st = _stat(pid)
        if st is None:
            continue
        out.append((pid, st[2]))
        todo.extend(parents.get(pid, []))
    return out


def running(p: Pid) -> bool:
    """True while the process runs (a zombie waiting to be reaped counts as stopped)."""
    st = _stat(p[0])
    return st is not None and st[2] == p[1] and st[0] not in ("Z", "X")


def port_free(port: int) -> bool:
    """True when a server could bind 127.0.0.1:port now (as servers do, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(check: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> bool:
    """Poll `check` until it is true or `timeout_s` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(step_s)
    return True


def kill_all(pids: Iterable[Pid]) -> None:
    """SIGKILL whatever of these processes still runs (test clean-up)."""
    for p in pids:
        if running(p):
            with contextlib.suppress(OSError):
                os.kill(p[0], 9)
