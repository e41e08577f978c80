"""Process ownership: every child a command starts is stopped when the command stops.

* :func:`spawn` starts a child in its own process group (so a terminal's Ctrl-C reaches only
  the owner, which then stops the child in order) and, on Linux, with a parent-death signal
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)``): if the owner is killed outright (SIGKILL, OOM killer)
  the kernel kills the child at once. The signal fires when the *thread* that forked dies, so
  it is only set when spawning from the main thread. Behind it, a lifeline watcher (one small
  process per owner, POSIX) stops the child's whole process group — grandchildren included —
  when the owner's end of a pipe closes, i.e. when the owner dies however it dies.
* :func:`stop` / :func:`stop_all` stop children gracefully — SIGTERM to the child's process
  group, then SIGKILL to the group after a timeout — and wait for them.
* :func:`stop_signals` turns SIGTERM and SIGHUP into a :class:`Terminated` exception in the main
  thread (as Python does with SIGINT and KeyboardInterrupt), so ``finally`` blocks and context
  managers stop the children whichever way the owner is asked to stop.
* :class:`EmbeddedServers` is the embedded llama.cpp servers as one context manager: servers
  already answering are reused and left alone, the others are started and stopped on exit.
* :class:`StartStop` makes anything with ``start()`` and ``stop()`` a context manager, and
  :func:`log_tail` reads the end of a child's log for an error message.

macOS has no parent-death signal: there the lifeline watcher alone stops the children of a
SIGKILLed owner (within about a second). Windows has neither process groups nor the watcher:
Ctrl-C stops the children; a killed owner leaves them running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from rag.config import Config
    from rag.models.embedded import Role, ServerSpec

STOP_TIMEOUT_S = 10.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else (signal.SIGTERM,)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while :func:`stop_signals` was active (like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] | None = getattr(libc, "prctl", None)
    return prctl


_PRCTL = _libc_prctl()

# The parent-death signal is set by the child itself, in a tiny launcher that then exec()s the
# command (same pid; the setting survives execve), not in a preexec_fn: a preexec_fn makes
# subprocess fork() and run Python in the child, where the fork handlers of libraries loaded in
# this process run too — grpcio (pymilvus) >= 1.80 restarts its epoll poller there and aborts
# the child before exec (grpc/grpc#43055). Without a preexec_fn, CPython uses vfork and no
# handler runs.
_PDEATHSIG_EXEC = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _owned_cmd(cmd: Sequence[str], parent_pid: int) -> list[str]:
    """`cmd` behind the launcher that asks for SIGKILL when `parent_pid` dies (Linux)."""
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_EXEC, str(parent_pid), *cmd]


# The lifeline: one small watcher process per owner reads a pipe whose only write end the owner
# holds. The owner writes "+pgid" / "-pgid" lines as it starts and stops children; when the
# owner dies in any way, the kernel closes the write end, the watcher reads EOF and stops every
# group still listed (SIGTERM, then SIGKILL after a grace). This also reaches grandchildren,
# which the parent-death signal (direct children only) does not, and works on macOS.
_WATCHER = """
import os, signal, sys, time
for s in (signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
fd, grace = int(sys.argv[1]), float(sys.argv[2])
groups, buf = set(), b""
while True:
    chunk = os.read(fd, 4096)
    if not chunk:
        break
    buf += chunk
    *lines, buf = buf.split(b"\\n")
    for line in lines:
        n = int(line)
        (groups.add if n > 0 else groups.discard)(abs(n))
def alive(g):
    try:
        os.killpg(g, 0)
        return True
    except OSError:
        return False
for sig in (signal.SIGTERM, signal.SIGKILL):
    for g in [g for g in groups if alive(g)]:
        try:
            os.killpg(g, sig)
        except OSError:
            pass
    end = time.monotonic() + grace
    while any(alive(g) for g in groups) and time.monotonic() < end:
        time.sleep(0.05)
"""
WATCHER_GRACE_S = 3.0
_lifeline_lock = threading.Lock()
_lifeline: tuple[int, int, subprocess.Popen[bytes]] | None = None  # (owner pid, write fd, watcher)


def _tell_watcher(line: str) -> None:
    """Send "+pgid"/"-pgid" to this process's watcher, starting it on first use (POSIX)."""
    global _lifeline
    if os.name != "posix":
        return
    with _lifeline_lock:
        if _lifeline is None or _lifeline[0] != os.getpid() or _lifeline[2].poll() is not None:
            read_fd, write_fd = os.pipe()  # both ends non-inheritable; pass_fds passes one
            try:
                watcher = subprocess.Popen(
                    [sys.executable, "-c", _WATCHER, str(read_fd), str(WATCHER_GRACE_S)],
                    pass_fds=(read_fd,),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    process_group=0,
                )
            finally:
                os.close(read_fd)
            _lifeline = (os.getpid(), write_fd, watcher)
        with contextlib.suppress(OSError):
            os.write(_lifeline[1], f"{line}\n".encode())


def spawn(
    cmd: Sequence[str],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    stdout: IO[Any] | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` owned by this process: its own process group, killed if we die (Linux).

    Output goes to `log` (truncated) when given, else to `stdout` (default: inherited).
    """
    # The parent-death signal fires when the creating *thread* ends: only from the main thread.
    if _PRCTL is not None and threading.current_thread() is threading.main_thread():
        cmd = _owned_cmd(cmd, os.getpid())
    kwargs: dict[str, Any] = {"env": dict(env) if env is not None else None, "cwd": cwd}
    if os.name == "posix":
        kwargs.update(process_group=0)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as fh:
            proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, **kwargs)
    else:
        proc = subprocess.Popen(list(cmd), stdout=stdout, **kwargs)
    _tell_watcher(f"+{proc.pid}")
    return proc


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # The child leads its own group (process_group=0), so its pid is the group id; signalling the
    # group also reaches anything it started. ProcessLookupError: already gone.
    if os.name != "posix":  # best effort: the child alone
        with contextlib.suppress(OSError):
            proc.kill() if sig == signal.SIGKILL else proc.terminate()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_all(
    procs: Iterable[subprocess.Popen[bytes]], timeout_s: float = STOP_TIMEOUT_S
) -> dict[int, int]:
    """SIGTERM each child's group, wait up to `timeout_s`, SIGKILL what is left; pid -> exit code.

    SIGINT, SIGTERM and SIGHUP are ignored meanwhile, so a second Ctrl-C cannot interrupt the
    stopping half-way (it is bounded by the timeout anyway).
    """
    procs = list(procs)
    with _signals_ignored():
        for proc in procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[int, int] = {}
        for proc in procs:
            try:
                codes[proc.pid] = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                codes[proc.pid] = proc.wait()
            _signal_group(proc, signal.SIGKILL)  # a grandchild that outlived its parent
            _tell_watcher(f"-{proc.pid}")
    return codes


def stop(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> int:
    """Stop one child as :func:`stop_all` does; its exit code."""
    return stop_all([proc], timeout_s)[proc.pid]


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, *_STOP_SIGNALS)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; the caller's owner handles signals
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Terminated(signum)

    old = {s: signal.signal(s, handler) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (by parent pid in /proc/*/stat; Linux). [] if pid is gone."""
    parents: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # it ended meanwhile
            ppid = int(text[text.rindex(")") + 2 :].split()[1])  # the name may hold spaces
            parents.setdefault(ppid, []).append(int(entry))
    if not Path(f"/proc/{pid}").exists():
        return []
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


class StartStop:
    """``with thing:`` calls ``thing.start()`` on entry and ``thing.stop()`` on exit, always."""

    def start(self) -> Self:
        return self

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file, or "(no log)" when it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Owned:
    """Children started with :meth:`start`, all stopped (in reverse order) on exit."""

    def __init__(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.timeout_s = timeout_s

    def start(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """:func:`spawn` `cmd` and own it."""
        proc = spawn(cmd, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self) -> dict[int, int]:
        """Stop every owned child that still runs; pid -> exit code."""
        procs, self.procs = self.procs[::-1], []
        return stop_all(procs, self.timeout_s)

    def __enter__(self) -> Owned:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedServers:
    """The embedded llama.cpp servers of `roles` for the duration of a ``with`` block.

    ``with EmbeddedServers(cfg, roles=("slm", "llm")) as servers:`` probes each role whose
    provider is ``embedded``: a server already serving the model is reused (``servers.reused``)
    and left running on exit; otherwise one is started (``servers.started``) and stopped on exit
    (SIGTERM, then SIGKILL after ``stop_timeout_s``). With ``reuse=False`` a server found on the
    port is an error. Roles with another provider are skipped (``servers.skipped``); nothing is
    started for them. Server logs go to ``log_dir`` (default: the data dir's ``logs``). Raises ModelError when a server cannot start or its port is taken.
    """

    def __init__(
        self,
        cfg: Config,
        roles: Sequence[Role] = ("slm", "llm"),
        *,
        reuse: bool = True,
        progress: Callable[[str], None] = lambda _m: None,
        ready_timeout_s: float = 180.0,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        log_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.log_dir = log_dir if log_dir is not None else cfg.data_dir / "logs"
        self.roles = tuple(roles)
        self.reuse = reuse
        self.progress = progress
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.started: list[ServerSpec] = []
        self.reused: list[ServerSpec] = []
        self.skipped: list[Role] = []
        self._stack: contextlib.ExitStack | None = None

    @property
    def specs(self) -> list[ServerSpec]:
        """Every embedded server in use, started or reused."""
        return [*self.started, *self.reused]

    def base_url(self, role: Role) -> str:
        """The base URL serving `role` (embedded or not)."""
        from rag.config import base_url_for

        mcfg = self.cfg.models.slm if role == "slm" else self.cfg.models.llm
        return base_url_for(mcfg, self.cfg.models.embedded, role)

    def __enter__(self) -> EmbeddedServers:
        from rag.models.embedded import embedded_specs, serve

        wanted = embedded_specs(self.cfg, self.roles)
        self.skipped = [r for r in self.roles if r not in {s.role for s in wanted}]
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(
                serve(
                    wanted,
                    self.log_dir,
                    self.progress,
                    ready_timeout_s=self.ready_timeout_s,
                    reuse=self.reuse,
                    started=self.started,
                    reused=self.reused,
                    stop_timeout_s=self.stop_timeout_s,
                )
            )
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(*exc)
