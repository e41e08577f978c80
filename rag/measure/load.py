"""`rag bench load`: concurrent chat sessions through the real Chainlit server, over the wire.

Set-up (all on 127.0.0.1, all stopped on the way out):

* the fake OpenAI server (``python -m rag.measure.fake_openai``)
  scripted so that every model answers "@echo-context" (the first sentence of passage [1], cited)
  at ``token_delay_s`` seconds per streamed token;
* ``python -m chainlit run app.py --headless`` with both model base URLs pointed at the fake, a
  throw-away ``RAG__DATA_DIR`` and the bm25 retriever (its index is built by the first session).

Each session speaks Chainlit 2.12's socket.io protocol as the React client does: connect to
``/ws/socket.io`` with ``auth = {clientType: "webapp", sessionId: <uuid4>, threadId: "", userEnv:
"{}", chatProfile: ""}``, emit ``connection_successful`` and ``fetch_favorites``, wait for
on_chat_start to finish (a ``task_start`` … ``task_end`` pair), then for each question emit
``client_message`` with ``{message: {id: <uuid4>, threadId: "", name: "User", type:
"user_message", output: <text>, createdAt: <ISO time>, metadata: {location}}, fileReferences:
[]}`` and wait for the ``task_end`` that Chainlit emits when on_message returns. Latency is the
time from that emit to that ``task_end`` (the final ``update_message`` of the answer precedes it).

Phases: a warm-up session (one question: index, connection pools), a baseline session alone
asking ``questions`` questions, then ``sessions`` sessions that connect first and then all ask at
once. Every session asks the baseline's questions (rotated, so they are not in step), because the
answer's length sets most of its latency. Added latency is the load's p50/p95 minus the
baseline's.

Cross-talk (an answer delivered to the wrong session) is detected two independent ways, from
everything each socket received (``new_message``, ``update_message``, ``stream_start``,
``stream_token``, ``element`` …):

* ids: Chainlit wraps on_message in a "run" step whose ``parentId`` is the user message id the
  client sent, and every step and message of the answer descends from it (``parentId`` chain;
  tokens name their step ``id``, elements their ``forId``). Anything on session S that descends
  from a question another session asked is cross-talk; so is a server-side root step (the
  on_chat_start run) seen by more than one session.
* content: every question carries a unique tag such as ``[ref s07-q3]``; the run step echoes it
  (its ``input`` is the question), so any tag of another session seen in S's events is cross-talk.

``cross_talk`` counts (receiving session, foreign question) pairs, i.e. misdelivered answers, not
events. A question is an error when no ``task_end`` came within ``ANSWER_TIMEOUT_S``, when no
assistant message with content (other than a "⚠️"/"ℹ️" notice) descends from it, or when one of
its steps has ``isError``; "⚠️" notices are counted apart as ``warnings``. Client and server share
the machine's cores, so the figures include the client's own cost; on a busy machine compare
``added_*`` only with a baseline taken in the same run, which is what this reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.errors import ConfigError, RagError
from rag.procs import log_tail, spawn, stop
from rag.stats import percentile

try:  # the load client's libraries are an extra, not a dependency of the app
    import httpx
    import socketio
except ImportError as exc:
    raise RagError(
        f"`rag bench load` needs {exc.name}, which the `load` extra installs: "
        "pip install -e '.[load]' (make install does)"
    ) from None

REPO_ROOT = Path(__file__).resolve().parents[2]
SOCKET_PATH = "/ws/socket.io"
START_TIMEOUT_S = 120.0  # chainlit imports the app, which builds the assistant
CONNECT_TIMEOUT_S = 30.0
CHAT_START_TIMEOUT_S = 60.0
ANSWER_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
QUESTIONS = (  # about the shipped docs_corpus, so bm25 finds strong context and the models answer
    "How do we roll back a bad release?",
    "Who do I escalate to when the on-call engineer does not respond?",
    "How long do we keep customer data after an account is closed?",
    "Why did we choose PostgreSQL as the primary datastore?",
    "How are money amounts stored?",
    "What caused the duplicate payment captures incident?",
    "How do engineers get production access with Teleport?",
    "How do I restart the dunning scheduler?",
    "What are the support response times for enterprise customers?",
    "How do idempotency keys work for payment operations?",
    "How do I set up my development environment?",
    "What happened during the ledger database failover?",
)
_TAG_RE = re.compile(r"\[ref (\w+)-q(\d+)\]")
_STEP_EVENTS = frozenset({"new_message", "update_message", "stream_start", "delete_message"})
_NOTICE_PREFIXES = ("⚠️", "ℹ️")

Progress = Callable[[str], None]


def _tag(session: str, n: int) -> str:
    return f"[ref {session}-q{n}]"


@dataclass
class Asked:
    """One question a session sent, and when its task ended (None: it never did)."""

    session: str
    n: int
    text: str
    message_id: str
    sent: float
    done: float | None = None
    note: str = ""


@dataclass
class SessionLog:
    """What one chat session sent and every event its socket received, in order."""

    name: str
    asked: list[Asked] = field(default_factory=list)
    events: list[tuple[float, str, Any]] = field(default_factory=list)
    failure: str = ""  # why the session could not connect or start, if it could not


@dataclass
class Tally:
    """The verdict on a phase: per-question latencies and what went wrong."""

    latencies_ms: list[float]
    errors: int
    cross_talk: int
    warnings: int
    unattributed: int
    samples: list[str]


# -- the client: one Chainlit chat session over socket.io ----------------------------------------


class ChatSession:
    """A socket.io chat session that behaves like Chainlit's React client."""

    def __init__(self, url: str, name: str, session_id: str | None = None) -> None:
        self.url = url
        self.log = SessionLog(name)
        self.session_id = session_id or str(uuid.uuid4())  # Chainlit's key for the server session
        self._sio: Any = socketio.AsyncClient(reconnection=False)
        self._sio.on("*", self._on_event)
        self._sio.on("disconnect", self._on_disconnect)
        self._busy = False
        self._tasks_done = 0
        self._last_done = 0.0
        self._gone = False
        self._changed = asyncio.Event()

    def _on_event(self, event: str, *args: Any) -> None:
        # A "*" handler on the default namespace gets (event, *data); Chainlit sends one payload.
        now = time.perf_counter()
        self.log.events.append((now, event, args[0] if args else None))
        if event == "task_start":
            self._busy = True
        elif event == "task_end":
            # connection_successful emits a bare task_end; only a started task counts as done.
            if self._busy:
                self._busy = False
                self._tasks_done += 1
                self._last_done = now
            self._changed.set()

    def _on_disconnect(self, *_reason: Any) -> None:
        self._gone = True
        self._changed.set()

    async def _wait_tasks(self, target: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._tasks_done < target:
            if self._gone:
                return False
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def connect(self) -> None:
        """Open the socket and announce it as the React client does; raises if that fails."""
        auth = {
            "clientType": "webapp",
            "sessionId": self.session_id,
            "threadId": "",
            "userEnv": "{}",
            "chatProfile": "",
        }
        await self._sio.connect(
            self.url, auth=auth, socketio_path=SOCKET_PATH, wait_timeout=CONNECT_TIMEOUT_S
        )
        await self._sio.emit("connection_successful")
        await self._sio.emit("fetch_favorites")

    async def start(self) -> bool:
        """Connect and wait for on_chat_start to finish; False (with log.failure) if it did not."""
        try:
            await self.connect()
        except Exception as exc:  # any transport failure is a finding, not a crash
            self.log.failure = f"{self.log.name}: could not connect: {exc!r}"
            return False
        if not await self._wait_tasks(1, CHAT_START_TIMEOUT_S):
            self.log.failure = (
                f"{self.log.name}: on_chat_start did not finish within {CHAT_START_TIMEOUT_S:g} s"
                + (" (disconnected)" if self._gone else "")
            )
            return False
        return True

    async def ask_all(self, questions: Sequence[str]) -> None:
        """Ask each question in turn, as a person would: the next once the answer is done."""
        for n, question in enumerate(questions, 1):
            text = f"{question} {_tag(self.log.name, n)}"
            message_id = str(uuid.uuid4())
            created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            message = {
                "threadId": "",
                "id": message_id,
                "name": "User",
                "type": "user_message",
                "output": text,
                "createdAt": created,
                "metadata": {"location": self.url + "/"},
            }
            target = self._tasks_done + 1
            asked = Asked(self.log.name, n, text, message_id, time.perf_counter())
            self.log.asked.append(asked)
            try:
                await self._sio.emit("client_message", {"message": message, "fileReferences": []})
            except Exception as exc:
                asked.note = f"could not send: {exc!r}"
                return
            if await self._wait_tasks(target, ANSWER_TIMEOUT_S):
                asked.done = self._last_done
                continue
            asked.note = "disconnected" if self._gone else f"no answer in {ANSWER_TIMEOUT_S:g} s"
            with contextlib.suppress(Exception):
                await self._sio.emit("stop")  # what the UI's stop button sends
            return  # the rest of this session's questions stay unasked: errors

    async def close(self) -> None:
        """Leave like the UI's "new chat" does (clear_session), then disconnect."""
        with contextlib.suppress(Exception):
            if self._sio.connected:
                await asyncio.wait_for(self._sio.emit("clear_session"), STOP_TIMEOUT_S)
            await asyncio.wait_for(self._sio.disconnect(), STOP_TIMEOUT_S)


def questions_for(index: int, count: int) -> list[str]:
    """Session `index`'s `count` questions: the baseline's, rotated so sessions are not in step.

    Every session asks the same set as the baseline session (index 0), so the load and the
    baseline are medians over the same answers (whose lengths set most of the latency).
    """
    base = [QUESTIONS[j % len(QUESTIONS)] for j in range(count)]
    shift = index % count
    return base[shift:] + base[:shift]


async def run_sessions(url: str, names: Sequence[str], questions: int) -> list[SessionLog]:
    """Connect every session, then let them all ask at once; their logs, failed ones included."""
    clients = [ChatSession(url, name) for name in names]
    try:
        started = await asyncio.gather(*(c.start() for c in clients))
        await asyncio.gather(
            *(
                c.ask_all(questions_for(i, questions))
                for i, (c, ok) in enumerate(zip(clients, started, strict=True))
                if ok
            )
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return [c.log for c in clients]


# -- the verdict ------------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _ids(event: str, data: Any) -> list[str]:
    """The step ids an event is about: the step itself, a token's step, an element's message."""
    if not isinstance(data, dict):
        return []
    if event in _STEP_EVENTS or event == "stream_token":
        return [data["id"]] if isinstance(data.get("id"), str) else []
    if event == "element":
        return [data["forId"]] if isinstance(data.get("forId"), str) else []
    return []


def analyse(logs: Sequence[SessionLog], questions: int) -> Tally:
    """Latencies, errors, cross-talk and warnings of one phase, from what each socket received."""
    owner = {a.message_id: a.session for log in logs for a in log.asked}
    by_tag = {(a.session, a.n): a.message_id for log in logs for a in log.asked}
    parent: dict[str, str | None] = {}
    for log in logs:
        for _t, event, data in log.events:
            if event not in _STEP_EVENTS or not isinstance(data, dict):
                continue
            step_id = data.get("id")
            if isinstance(step_id, str) and (data.get("parentId") or step_id not in parent):
                parent[step_id] = data.get("parentId") or None

    def root_of(step_id: str) -> str | None:
        seen: set[str] = set()
        node = step_id
        while node not in owner:
            if node in seen or node not in parent:
                return None  # a cycle, or a parent never seen: cannot say whose it is
            seen.add(node)
            up = parent[node]
            if up is None:
                return node  # a server-side root (the on_chat_start run)
            node = up
        return node

    foreign: set[tuple[str, str]] = set()
    server_roots: dict[str, set[str]] = {}
    unattributed: set[tuple[str, str]] = set()
    samples: list[str] = []
    for log in logs:
        for _t, event, data in log.events:
            for step_id in _ids(event, data):
                root = root_of(step_id)
                if root is None:
                    unattributed.add((log.name, step_id))
                elif root in owner:
                    if owner[root] != log.name:
                        foreign.add((log.name, root))
                else:
                    server_roots.setdefault(root, set()).add(log.name)
            for text in _strings(data):
                for session, n in _TAG_RE.findall(text):
                    if session != log.name:
                        foreign.add((log.name, by_tag.get((session, int(n)), f"{session}-q{n}")))
    shared_roots = sum(len(names) - 1 for names in server_roots.values())
    for name, root in sorted(foreign)[:3]:
        samples.append(
            f"cross-talk: {name} received the answer to {owner.get(root, root)}'s {root}"
        )

    latencies: list[float] = []
    errors = warnings = 0
    for log in logs:
        if log.failure:
            samples.append(log.failure)
        errors += questions - len(log.asked)  # never asked: the session failed or gave up
        steps = _merged_steps(log)
        for a in log.asked:
            mine = [s for sid, s in steps.items() if root_of(sid) == a.message_id]
            outputs = [
                str(s.get("output") or "").strip()
                for s in mine
                if s.get("type") == "assistant_message"
            ]
            answered = any(o and not o.startswith(_NOTICE_PREFIXES) for o in outputs)
            warnings += sum(o.startswith("⚠️") for o in outputs)
            failed = [s for s in mine if s.get("isError")]
            why = a.note or (
                "no answer message" if not answered else "a step failed" if failed else ""
            )
            if a.done is None and not why:
                why = "no task_end"
            if why:
                errors += 1
                notices = [o for o in outputs if o.startswith("⚠️")] + [
                    str(s.get("output") or "") for s in failed
                ]
                detail = f": {notices[0][:160]}" if notices else ""
                samples.append(f"error: {a.session} q{a.n}: {why}{detail}")
            elif a.done is not None:
                latencies.append((a.done - a.sent) * 1000)
    return Tally(
        latencies,
        errors,
        len(foreign) + shared_roots,
        warnings,
        len(unattributed),
        samples,
    )


def _merged_steps(log: SessionLog) -> dict[str, dict[str, Any]]:
    """Each step's final state as the UI would show it: dicts merged, tokens appended."""
    steps: dict[str, dict[str, Any]] = {}
    for _t, event, data in log.events:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            continue
        if event in ("new_message", "update_message", "stream_start"):
            steps.setdefault(data["id"], {}).update(data)
        elif event == "stream_token" and data["id"] in steps:
            key = "input" if data.get("isInput") else "output"
            token = str(data.get("token") or "")
            step = steps[data["id"]]
            step[key] = token if data.get("isSequence") else str(step.get(key) or "") + token
    return steps


def _pct(values: Sequence[float], q: int) -> float | None:
    return percentile(values, q) if values else None


# -- the servers ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
    fake_port = _free_port()
    fake_cmd = [sys.executable, "-m", "rag.measure.fake_openai", "--port", str(fake_port)]
    fake_url = f"http://127.0.0.1:{fake_port}/v1"
    with _server(
        [*fake_cmd, "--script", str(script)],
        env,
        workdir / "fake_openai.log",
        f"{fake_url}/models",
        "the fake model server",
    ):
        app_port = port or _free_port()
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


# -- the benchmark ----------------------------------------------------------------------------


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 1)


def bench_load(
    sessions: int,
    questions: int,
    *,
    token_delay_s: float = 0.02,
    port: int | None = None,
    progress: Progress = lambda _m: None,
) -> dict[str, Any]:
    """Errors, cross-talk and added latency of `sessions` concurrent chats of `questions` each."""
    if sessions < 1 or questions < 1:
        raise ConfigError(
            f"--sessions and --questions must be at least 1, got {sessions} and {questions}"
        )
    if token_delay_s < 0:
        raise ConfigError(f"token_delay_s must be 0 or more seconds, got {token_delay_s}")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    with tempfile.TemporaryDirectory(prefix="rag-bench-load-") as tmp:
        workdir = Path(tmp)
        progress("starting the fake model server and `chainlit run app.py` …")
        with running_app(token_delay_s, port, workdir) as url:
            progress(f"chat app on {url}; warm-up session (builds the bm25 index) …")
            report, failed = asyncio.run(_phases(url, sessions, questions, progress))
            if failed:
                progress(f"chainlit log tail:\n{log_tail(workdir / 'chainlit.log', 15)}")
    return report


async def _phases(
    url: str, sessions: int, questions: int, progress: Progress
) -> tuple[dict[str, Any], bool]:
    warm = analyse(await run_sessions(url, ["w"], 1), 1)
    if warm.errors or warm.cross_talk:
        raise RagError(
            "the warm-up question was not answered, so there is nothing to measure: "
            + "; ".join(warm.samples or ["no detail"])
        )
    progress(f"baseline: one session alone, {questions} questions …")
    base = analyse(await run_sessions(url, ["b"], questions), questions)
    progress(f"load: {sessions} sessions × {questions} questions at once …")
    names = [f"s{i:02d}" for i in range(sessions)]
    t0 = time.perf_counter()
    load = analyse(await run_sessions(url, names, questions), questions)
    wall_s = time.perf_counter() - t0
    for line in [*base.samples, *load.samples][:10]:
        progress(line)
    base_p50, base_p95 = _pct(base.latencies_ms, 50), _pct(base.latencies_ms, 95)
    p50, p95 = _pct(load.latencies_ms, 50), _pct(load.latencies_ms, 95)
    report = {
        "sessions": sessions,
        "questions": questions,
        "answers": len(load.latencies_ms),
        "errors": load.errors,
        "cross_talk": load.cross_talk,
        "warnings": load.warnings,
        "unattributed": load.unattributed,
        "p50_ms": _ms(p50),
        "p95_ms": _ms(p95),
        "baseline_p50_ms": _ms(base_p50),
        "baseline_p95_ms": _ms(base_p95),
        "added_p50_ms": _minus(p50, base_p50),
        "added_p95_ms": _minus(p95, base_p95),
        "baseline_errors": base.errors + base.cross_talk,
        "wall_s": round(wall_s, 2),
    }
    return report, bool(load.errors or load.cross_talk or base.errors)
