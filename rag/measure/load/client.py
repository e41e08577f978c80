"""The client: Chainlit chat sessions over socket.io, as the React client speaks it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import socketio

from rag.measure.load.verdict import Asked, SessionLog, _tag

SOCKET_PATH = "/ws/socket.io"
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
Progress = Callable[[str], None]
Posted = Literal["answered", "unsent", "unanswered"]


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

    async def post(self, n: int, text: str, refs: Sequence[dict[str, str]] = ()) -> Posted:
        """Send user message `n` (with uploaded file `refs`) and wait for its task to end.

        "answered" (``asked.done`` set), "unsent" or "unanswered"; ``asked.note`` says why.
        """
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
            await self._sio.emit(
                "client_message", {"message": message, "fileReferences": list(refs)}
            )
        except Exception as exc:
            asked.note = f"could not send: {exc!r}"
            return "unsent"
        if await self._wait_tasks(target, ANSWER_TIMEOUT_S):
            asked.done = self._last_done
            return "answered"
        asked.note = "disconnected" if self._gone else f"no answer in {ANSWER_TIMEOUT_S:g} s"
        return "unanswered"

    async def ask_all(self, questions: Sequence[str]) -> None:
        """Ask each question in turn, as a person would: the next once the answer is done."""
        for n, question in enumerate(questions, 1):
            posted = await self.post(n, f"{question} {_tag(self.log.name, n)}")
            if posted == "answered":
                continue
            if posted == "unanswered":
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
