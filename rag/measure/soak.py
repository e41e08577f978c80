"""`rag bench soak`: many chats over the real Chainlit socket for N minutes; does the app leak?

Set-up as `rag bench load` (rag/bench_load.py): the fake OpenAI server and ``chainlit run app.py``
on loopback, the app on a throw-away data dir and a *copy* of docs_corpus (uploads land there).

Load: ``sessions`` workers run in rounds until the time is up. In each round every worker opens
a new chat (a new socket and Chainlit session, as "new chat" in the UI does), asks three messages
and leaves (``clear_session``, disconnect). The middle message rotates through the app's
features, so every kind runs all the time:

* a question with a file attached (uploaded over HTTP to ``/project/file`` first, as the UI
  does); the files come from a fixed pool of six small documents, all uploaded once during the
  warm-up, so later uploads are duplicates and the index stays the same size (a growing corpus
  would be growth by design, not a leak);
* a settings change (``chat_settings_change``: retriever bm25/lexical, top k, mode) and then a
  question, which must get the "Settings applied" reply first;
* ``/stats`` (a Plotly chart element);
* ``/compare <question>`` (both models stream).

Every answer is checked as `rag bench load` checks it (errors, cross-talk by ids and by tags);
the rounds are analysed one at a time, so the client's own memory stays flat.

Measured on the Chainlit server process (and any children it has): resident memory (VmRSS from
/proc/<pid>/status) and open file descriptors (/proc/<pid>/fd), sampled every ``sample_s``
seconds. "start" is the sample at the end of the warm-up (a warm-up chat that builds both
indexes and uploads the pool, then ``warmup_s`` seconds of the full load); "end" is the last
sample. Slopes are least-squares fits over the samples after the warm-up, per minute.

"Warm" is later: the first sample at least ``warm_min`` minutes into the measured time (at most
half of it). Until then memory rises by design: allocator arenas and Python's free lists grow
to the load's peak, SQLite's page cache fills, and what finished chats leave until the next
housekeeping pass (every 5 s, webui/housekeeping.py) reaches its steady amount. ``rss_warm_mb`` is that
sample, ``growth_after_warmup`` the end's growth over it in percent, and
``rss_slope_after_warm_mib_per_min`` the fit over the samples from it on: a leak shows there as
a steady slope, which this is meant to show, not to hide.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx  # the load extra (rag.cli imports rag.measure.load first, which names it when missing)

from rag.errors import ConfigError, RagError
from rag.measure.load.client import ANSWER_TIMEOUT_S, QUESTIONS, ChatSession, Progress
from rag.measure.load.servers import REPO_ROOT, running_app
from rag.measure.load.verdict import SessionLog, _pct, _tag, analyse
from rag.procs import log_tail, process_tree

ACTIONS = ("upload", "settings", "stats", "compare")
MESSAGES_PER_CHAT = 3
SETTINGS_TIMEOUT_S = 30.0
UPLOAD_POOL = (  # small, distinct documents: (title, a fact); the file is <first word>.md
    ("Heron release checklist", "Releases named Heron need two approvals."),
    ("Osprey on-call rota", "The Osprey rota changes every Tuesday at noon."),
    ("Kestrel backup policy", "Kestrel backups are kept for 35 days."),
    ("Plover expense rules", "Plover taxi receipts are refunded within 9 days."),
    ("Egret laptop policy", "Egret laptops are replaced every four years."),
    ("Wren meeting rules", "Wren meetings end five minutes before the hour."),
)
SETTINGS = (  # (retriever, top_k, mode): valid choices of the app's settings panel
    ("lexical", 3, "never"),
    ("bm25", 5, "auto"),
    ("bm25", 4, "always"),
    ("lexical", 5, "auto"),
)


def _doc(i: int) -> tuple[str, bytes]:
    title, fact = UPLOAD_POOL[i % len(UPLOAD_POOL)]
    name = f"{title.split()[0].lower()}.md"
    return name, f"# {title}\n\n{fact} This note was uploaded by the soak test.\n".encode()


# -- resident memory and descriptors of a process tree ------------------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    """Open file descriptors of one process (0 if it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def tree_usage(pid: int) -> tuple[float, int]:
    """(resident MiB, open fds) of `pid` and its descendants."""
    pids = process_tree(pid)
    return sum(rss_kib(p) for p in pids) / 1024, sum(open_fds(p) for p in pids)


def find_app_pid(marker: str = "chainlit") -> int:
    """The pid of this process's child whose command line mentions `marker`."""
    for kid in process_tree(os.getpid())[1:]:
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{kid}/cmdline").read_bytes().decode(errors="replace"):
                return kid
    raise RagError(f"no child process running {marker!r} found under pid {os.getpid()}")


def slope_per_min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 60


def after_warmup(
    timeline: Sequence[tuple[float, float, int]], warm_min: float
) -> dict[str, float | None]:
    """RSS at the first sample `warm_min` minutes in (at most half the run), growth and slope since."""
    if not timeline:
        return {"rss_warm_at_min": None, "rss_warm_mb": None, "growth_after_warmup": None,
                "rss_slope_after_warm_mib_per_min": None}  # fmt: skip
    warm_at_s = min(warm_min * 60, timeline[-1][0] / 2)
    after = [(t, m) for t, m, _ in timeline if t >= warm_at_s]
    t_warm, rss_warm = after[0]
    rss_end = timeline[-1][1]
    return {
        "rss_warm_at_min": round(t_warm / 60, 2),
        "rss_warm_mb": round(rss_warm, 1),
        "growth_after_warmup": round((rss_end - rss_warm) / rss_warm * 100, 2)
        if rss_warm
        else None,
        "rss_slope_after_warm_mib_per_min": _round3(slope_per_min(after)),
    }


# -- one chat -----------------------------------------------------------------------------------


class SoakSession(ChatSession):
    """A ChatSession that can also attach files and change settings."""

    async def send(self, n: int, text: str, files: Sequence[tuple[str, bytes]] = ()) -> bool:
        """Send one message (tagged unless it is a bare command) and wait for its task_end."""
        refs: list[dict[str, str]] = []
        for name, data in files:
            async with httpx.AsyncClient(trust_env=False, timeout=ANSWER_TIMEOUT_S) as client:
                resp = await client.post(
                    f"{self.url}/project/file",
                    params={"session_id": self.session_id},
                    files={"file": (name, data, "text/markdown")},
                )
            if resp.status_code != 200:
                self.log.failure = f"{self.log.name}: upload of {name} got HTTP {resp.status_code}"
                return False
            refs.append({"id": str(resp.json()["id"])})
        return await self.post(n, text, refs) == "answered"

    async def change_settings(self, retriever: str, top_k: int, mode: str) -> str:
        """Emit chat_settings_change; '' once "Settings applied" arrives, else what went wrong."""
        settings = {
            "retriever": retriever, "top_k": top_k, "mode": mode, "strategy": "answer",
            "min_draft_chars": 40, "weak_context": -1, "temperature": 0.1, "demo": False,
        }  # fmt: skip
        seen = len(self.log.events)
        try:
            await self._sio.emit("chat_settings_change", settings)
        except Exception as exc:
            return f"could not send settings: {exc!r}"
        deadline = time.monotonic() + SETTINGS_TIMEOUT_S
        while time.monotonic() < deadline and not self._gone:
            for _t, event, data in self.log.events[seen:]:
                if (
                    event == "new_message"
                    and isinstance(data, dict)
                    and str(data.get("output", "")).startswith("Settings applied")
                ):
                    # Chainlit runs the settings hook as a task too: wait for its task_end, or
                    # it would be taken for the end of the next question's task.
                    while self._busy and time.monotonic() < deadline and not self._gone:
                        await asyncio.sleep(0.02)
                    if self._busy:
                        return f"the settings task did not end in {SETTINGS_TIMEOUT_S:g} s"
                    return "" if f"retriever **{retriever}**" in data["output"] else data["output"]
            await asyncio.sleep(0.05)
        return "disconnected" if self._gone else f"no settings reply in {SETTINGS_TIMEOUT_S:g} s"


@dataclass
class Counts:
    """What the soak did and what went wrong, summed over rounds."""

    chats: int = 0
    messages: int = 0
    uploads: int = 0
    settings: int = 0
    stats: int = 0
    compares: int = 0
    errors: int = 0
    cross_talk: int = 0
    warnings: int = 0
    unattributed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)

    def add_round(self, logs: Sequence[SessionLog], extra_errors: Sequence[str]) -> None:
        tally = analyse(logs, MESSAGES_PER_CHAT)
        self.chats += len(logs)
        self.messages += sum(len(log.asked) for log in logs)
        self.errors += tally.errors + len(extra_errors)
        self.cross_talk += tally.cross_talk
        self.warnings += tally.warnings
        self.unattributed += tally.unattributed
        self.latencies_ms.extend(tally.latencies_ms)
        if len(self.samples) < 20:
            self.samples.extend([*extra_errors, *tally.samples][: 20 - len(self.samples)])


async def one_chat(
    url: str, name: str, action: str, k: int, counts: Counts
) -> tuple[SessionLog, str]:
    """One chat: a question, the action, a question; its log and a settings error ('' if none)."""
    chat = SoakSession(url, name)
    problem = ""
    try:
        if not await chat.start():
            return chat.log, ""
        q = [QUESTIONS[(k + j) % len(QUESTIONS)] for j in range(3)]
        if not await chat.send(1, f"{q[0]} {_tag(name, 1)}"):
            return chat.log, ""
        if action == "upload":
            counts.uploads += 1
            doc = _doc(k)
            ok = await chat.send(2, f"What does {doc[0]} say? {_tag(name, 2)}", [doc])
        elif action == "settings":
            counts.settings += 1
            retriever, top_k, mode = SETTINGS[k % len(SETTINGS)]
            why = await chat.change_settings(retriever, top_k, mode)
            problem = f"error: {name} settings change: {why}" if why else ""
            ok = await chat.send(2, f"{q[1]} {_tag(name, 2)}")
        elif action == "stats":
            counts.stats += 1
            ok = await chat.send(2, "/stats")
        else:
            counts.compares += 1
            ok = await chat.send(2, f"/compare {q[1]} {_tag(name, 2)}")
        if ok:
            await chat.send(3, f"{q[2]} {_tag(name, 3)}")
    finally:
        await chat.close()
    return chat.log, problem


async def _round(url: str, r: int, sessions: int, counts: Counts) -> None:
    names = [f"r{r:04d}s{i:02d}" for i in range(sessions)]
    results = await asyncio.gather(
        *(
            one_chat(url, name, ACTIONS[(r + i) % len(ACTIONS)], r * sessions + i, counts)
            for i, name in enumerate(names)
        )
    )
    counts.add_round([log for log, _ in results], [p for _, p in results if p])


async def _warm_up(url: str, counts: Counts) -> None:
    """Build both indexes, upload the whole pool, and run /stats and /compare once."""
    chat = SoakSession(url, "warm")
    try:
        if not await chat.start():
            raise RagError(f"the warm-up chat could not start: {chat.log.failure}")
        steps: list[tuple[str, Sequence[tuple[str, bytes]]]] = [
            (f"{QUESTIONS[0]} {_tag('warm', 1)}", ()),
            ("/stats", ()),
            (f"/compare {QUESTIONS[1]} {_tag('warm', 3)}", ()),
        ]
        steps += [
            (f"What does {_doc(i)[0]} say? {_tag('warm', 4 + i)}", [_doc(i)])
            for i in range(len(UPLOAD_POOL))
        ]
        for n, (text, files) in enumerate(steps, 1):
            if not await chat.send(n, text, files):
                raise RagError(
                    f"the warm-up message {text!r} got no answer: {chat.log.asked[-1].note}"
                )
        why = await chat.change_settings("lexical", 5, "auto")
        if why:
            raise RagError(f"the warm-up settings change failed: {why}")
        if not await chat.send(len(steps) + 1, f"{QUESTIONS[2]} {_tag('warm', 99)}"):
            raise RagError("the warm-up question on the lexical retriever got no answer")
    finally:
        await chat.close()
    tally = analyse([chat.log], len(chat.log.asked))
    if tally.errors or tally.cross_talk:
        raise RagError("the warm-up chat went wrong: " + "; ".join(tally.samples or ["no detail"]))


async def _soak(
    url: str, app_pid: int, minutes: float, sessions: int, warmup_s: float, sample_s: float,
    warm_min: float, progress: Progress,
) -> dict[str, Any]:  # fmt: skip
    warm = Counts()
    await _warm_up(url, warm)
    progress(f"warm-up chat done; {warmup_s:g} s of load before the first measurement …")
    counts = Counts()
    t_warm_end = time.monotonic() + warmup_s
    r = 0
    while time.monotonic() < t_warm_end:
        await _round(url, r, sessions, warm)
        r += 1
    rss0, fds0 = tree_usage(app_pid)
    t0 = time.monotonic()
    timeline: list[tuple[float, float, int]] = [(0.0, rss0, fds0)]
    progress(f"measuring for {minutes:g} min: app RSS {rss0:.1f} MiB, {fds0} fds at start")
    end = t0 + minutes * 60
    next_sample = t0 + sample_s
    next_note = t0 + 60
    while time.monotonic() < end:
        await _round(url, r, sessions, counts)
        r += 1
        now = time.monotonic()
        if now >= next_sample:
            rss, fds = tree_usage(app_pid)
            timeline.append((now - t0, rss, fds))
            next_sample = now + sample_s
        if now >= next_note:
            progress(
                f"{(now - t0) / 60:.1f} min: {counts.chats} chats, {counts.errors} errors, "
                f"{counts.cross_talk} cross-talk, RSS {timeline[-1][1]:.1f} MiB, "
                f"{timeline[-1][2]} fds"
            )
            next_note = now + 60
    wall_s = time.monotonic() - t0
    rss1, fds1 = tree_usage(app_pid)
    timeline.append((wall_s, rss1, fds1))
    for line in counts.samples[:10]:
        progress(line)
    requests = counts.messages + counts.settings  # an upload is part of its message
    return {
        "minutes": round(wall_s / 60, 2),
        "warmup_s": warmup_s,
        "sessions": sessions,
        "chats": counts.chats,
        "requests": requests,
        "messages": counts.messages,
        "uploads": counts.uploads,
        "settings_changes": counts.settings,
        "stats": counts.stats,
        "compares": counts.compares,
        "errors": counts.errors,
        "cross_talk": counts.cross_talk,
        "warnings": counts.warnings,
        "unattributed": counts.unattributed,
        "warmup_errors": warm.errors + warm.cross_talk,
        "p50_ms": _round1(_pct(counts.latencies_ms, 50)),
        "p95_ms": _round1(_pct(counts.latencies_ms, 95)),
        "app_pid_tree": len(process_tree(app_pid)),
        "rss_mib_start": round(rss0, 1),
        "rss_mib_end": round(rss1, 1),
        "rss_mib_max": round(max(s[1] for s in timeline), 1),
        "rss_growth_pct": round((rss1 - rss0) / rss0 * 100, 2) if rss0 else None,
        "rss_slope_mib_per_min": _round3(slope_per_min([(t, m) for t, m, _ in timeline])),
        **after_warmup(timeline, warm_min),
        "fds_start": fds0,
        "fds_end": fds1,
        "fds_max": max(s[2] for s in timeline),
        "fds_slope_per_min": _round3(slope_per_min([(t, float(f)) for t, _, f in timeline])),
        "timeline": [[round(t / 60, 2), round(m, 1), f] for t, m, f in timeline],
        "error_samples": counts.samples[:10],
    }


def _round1(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _round3(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def bench_soak(
    minutes: float,
    *,
    sessions: int = 6,
    token_delay_s: float = 0.01,
    warmup_s: float = 60.0,
    sample_s: float = 15.0,
    warm_min: float = 5.0,
    port: int | None = None,
    progress: Progress = lambda _m: None,
) -> dict[str, Any]:
    """Chats with uploads, settings, /stats and /compare for `minutes`; errors, RSS and fds."""
    if minutes <= 0 or sessions < 1:
        raise ConfigError(
            f"--minutes must be > 0 and --sessions >= 1, got {minutes} and {sessions}"
        )
    if warmup_s < 0 or sample_s <= 0 or token_delay_s < 0 or warm_min < 0:
        raise ConfigError(
            f"--warmup-s, --warm-min and --token-delay must be >= 0 and the sample interval > 0, "
            f"got {warmup_s}, {warm_min}, {token_delay_s} and {sample_s}"
        )
    if not os.path.isdir("/proc/self/fd"):
        raise RagError("`rag bench soak` reads /proc to measure the app: it runs on Linux only")
    with tempfile.TemporaryDirectory(prefix="rag-bench-soak-") as tmp:
        workdir = Path(tmp)
        corpus = workdir / "corpus"  # uploads land here, never in the repository's docs_corpus
        shutil.copytree(REPO_ROOT / "docs_corpus", corpus, ignore=shutil.ignore_patterns("uploads"))
        env = {
            "RAG__CORPUS__PATH": str(corpus),
            "RAG__CORPUS__UPLOADS_DIR": str(corpus / "uploads"),
        }
        progress("starting the fake model server and `chainlit run app.py` …")
        with running_app(token_delay_s, port, workdir, extra_env=env) as url:
            app_pid = find_app_pid()
            progress(f"chat app on {url} (pid {app_pid}); warm-up chat …")
            try:
                report = asyncio.run(
                    _soak(url, app_pid, minutes, sessions, warmup_s, sample_s, warm_min, progress)
                )
            except RagError:
                progress(f"chainlit log tail:\n{log_tail(workdir / 'chainlit.log', 15)}")
                raise
            if report["errors"] or report["cross_talk"]:
                progress(f"chainlit log tail:\n{log_tail(workdir / 'chainlit.log', 15)}")
    return report
