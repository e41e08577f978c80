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

The package: ``client`` (the socket.io sessions), ``verdict`` (what they logged, judged),
``servers`` (the fake model server and the app) and ``bench`` (the phases and the report).
"""

from __future__ import annotations

from rag.errors import RagError

try:  # the load client's libraries are an extra, not a dependency of the app
    import httpx  # noqa: F401
    import socketio  # noqa: F401
except ImportError as exc:
    raise RagError(
        f"`rag bench load` needs {exc.name}, which the `load` extra installs: "
        "pip install -e '.[load]' (make install does)"
    ) from None

from rag.measure.load.bench import bench_load
from rag.measure.load.client import (
    ANSWER_TIMEOUT_S,
    QUESTIONS,
    ChatSession,
    Progress,
    questions_for,
    run_sessions,
)
from rag.measure.load.servers import REPO_ROOT, running_app
from rag.measure.load.verdict import Asked, SessionLog, Tally, analyse

__all__ = [
    "ANSWER_TIMEOUT_S",
    "QUESTIONS",
    "REPO_ROOT",
    "Asked",
    "ChatSession",
    "Progress",
    "SessionLog",
    "Tally",
    "analyse",
    "bench_load",
    "questions_for",
    "run_sessions",
    "running_app",
]
