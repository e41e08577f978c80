"""Chainlit hooks and rendering only: the assistant yields events, this file draws them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import mimetypes
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import chainlit as cl
import chainlit.config
import chainlit.server
import plotly.graph_objects as go
from chainlit.auth import get_current_user
from chainlit.config import config as chainlit_config
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.data.storage_clients.base import BaseStorageClient
from chainlit.input_widget import Select, Slider, Switch
from chainlit.types import ThreadDict
from chainlit.utils import utc_now
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from rag import RagError, load_config
from rag.assistant import AskOptions, Assistant, build_assistant
from rag.history import (
    DEMO_SEED,
    FILES_DIR,
    FILES_ROUTE,
    SETTINGS_KEY,
    auth_setup,
    conninfo,
    db_path,
    decode_thread,
    ensure_schema,
    file_url,
    may_read,
    options_from_settings,
    settings_from_thread,
    sqlite_params,
    stored_file,
)
from rag.playground import MAX_BODY_BYTES, parse_request, playground_events, sse_stream
from rag.stats import SessionStats
from rag.types import (
    ContextPacked,
    Done,
    Escalated,
    Failed,
    Notice,
    Retrieved,
    StageFinished,
    StageStarted,
    Token,
)
from rag.uploads import add_upload

os.environ.setdefault("HF_HUB_OFFLINE", "1")
log = logging.getLogger("rag.app")

CFG = load_config(os.environ.get("RAG_CONFIG", "rag.yaml"))
ASSISTANT: Assistant = build_assistant(CFG, progress=log.info)
RETRIEVERS = ["lexical", "bm25", "embedding", "hybrid"]
MODES = ["auto", "never", "always", "compare"]
STRATEGIES = ["answer", "refine"]
PROFILES = {  # chat profile -> escalation mode
    "Cascade": ("auto", "The small model drafts; the large one is asked when needed."),
    "Small model only": ("never", "Every answer from the small model."),
    "Large model only": ("always", "Every answer from the large model."),
    "Compare": ("compare", "Both models answer the same question, side by side."),
}
WELCOME = (
    "👋 **Welcome to the Docs Assistant.** Ask a question about the team's internal documents "
    "(on-call runbooks, policies, ADRs, the release process…). Answers cite their sources like "
    "[1] — click a marker to open the passage. Change the retriever, the number of passages and "
    "the escalation mode in the settings panel (⚙). To try one prompt against either model and "
    "watch the tokens arrive, open the [streaming playground](/playground)."
)

# Chainlit's index.html preconnects to Google Fonts and loads KaTeX's CSS from a CDN. This app
# runs offline (latex = false, no custom fonts), so both tags are dropped: the page then loads
# nothing from outside this server (tests/e2e/test_offline_page.py checks it).
_REMOTE_LINK = re.compile(r'\s*<link\b[^>]*\bhref="https?://[^"]*"[^>]*>')
_chainlit_html = chainlit.server.get_html_template


def _offline_html(root_path: str) -> str:
    return _REMOTE_LINK.sub("", _chainlit_html(root_path))


chainlit.server.get_html_template = _offline_html

# Chainlit keeps each session's files (uploads, element contents) under <app folder>/.files and
# deletes that whole folder when a server started from this folder stops, even while another
# one still serves from it (`make test` next to `make run`, parallel test servers): elements then
# fail with FileNotFoundError. Each data_dir gets its own folder instead; Chainlit still removes
# a session's subfolder when the session ends.
SESSION_FILES = CFG.data_dir.resolve() / "session-files"
SESSION_FILES.mkdir(parents=True, exist_ok=True)
chainlit.config.FILES_DIRECTORY = SESSION_FILES


# -- history and sign-in (rag/history.py holds the schema and the checks) ------------------------

HISTORY_DB = db_path(CFG.data_dir)
ensure_schema(HISTORY_DB)  # tables created on first start; a clear error if data_dir is read-only
AUTH = auth_setup(os.environ)  # a malformed RAG_USERS stops start-up with the entry it dislikes
log.info("chat history in %s; %s", HISTORY_DB, AUTH.reason)


class _SQLiteDataLayer(SQLAlchemyDataLayer):
    """Chainlit's SQL data layer on SQLite: lists and dicts stored as JSON text and read back.

    Chainlit persists each step write in its own task, so a step's creation (empty output) can
    land after its update (with the output) and blank it in the stored thread. Step writes here
    go through one lock, in the order Chainlit issued them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._step_writes = asyncio.Lock()

    async def create_step(self, step_dict: Any) -> None:
        async with self._step_writes:  # FIFO: the tasks reach it in the order they were created
            await super().create_step(step_dict)

    async def execute_sql(self, query: str, parameters: dict[str, Any]) -> Any:
        return await super().execute_sql(query, sqlite_params(parameters))

    async def get_all_user_threads(
        self, user_id: str | None = None, thread_id: str | None = None
    ) -> list[ThreadDict] | None:
        threads = await super().get_all_user_threads(user_id=user_id, thread_id=thread_id)
        if threads is None:
            return None
        return [decode_thread(t) for t in threads]  # type: ignore[misc]


class _ElementFiles(BaseStorageClient):
    """Element contents (cited passages, charts, attachments) of stored threads, on local disk.

    Without a storage client Chainlit keeps no elements, and a resumed answer's [1] would open
    nothing. Files live in <data_dir>/history-files and are served by GET /history/files/….
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    async def upload_file(
        self,
        object_key: str,
        data: bytes | str,
        mime: str = "application/octet-stream",
        overwrite: bool = True,
        content_disposition: str | None = None,
    ) -> dict[str, Any]:
        path = stored_file(self.root, object_key)
        if overwrite or not path.exists():
            raw = data.encode("utf-8") if isinstance(data, str) else data
            await asyncio.to_thread(_write_file, path, raw)
        return {"object_key": object_key, "url": await self.get_read_url(object_key)}

    async def delete_file(self, object_key: str) -> bool:
        try:
            stored_file(self.root, object_key).unlink()
        except (ValueError, OSError):
            return False
        return True

    async def get_read_url(self, object_key: str) -> str:
        return file_url(object_key, chainlit_config.run.root_path)

    async def close(self) -> None:
        return None


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


ELEMENT_FILES = CFG.data_dir.resolve() / FILES_DIR


@cl.data_layer
def history_layer() -> SQLAlchemyDataLayer:
    return _SQLiteDataLayer(
        conninfo=conninfo(HISTORY_DB), storage_provider=_ElementFiles(ELEMENT_FILES)
    )


if AUTH.users is not None:
    _USERS = AUTH.users

    @cl.password_auth_callback
    async def password_auth(username: str, password: str) -> cl.User | None:
        if _USERS.check(username, password):
            return cl.User(identifier=username, metadata={"provider": "credentials"})
        log.warning("sign-in refused for %r", username)
        return None


# -- chat ----------------------------------------------------------------------------------------


def _panel_values() -> dict[str, Any]:
    values = cl.user_session.get("chat_settings")
    return dict(values) if isinstance(values, dict) else {}


def _opts() -> AskOptions:
    opts = cl.user_session.get("opts")
    return opts if isinstance(opts, AskOptions) else AskOptions()


@cl.set_chat_profiles
async def chat_profiles(_user: Any = None) -> list[cl.ChatProfile]:
    return [
        cl.ChatProfile(name=name, markdown_description=desc)
        for name, (_m, desc) in PROFILES.items()
    ]


def _profile_mode() -> str:
    profile = cl.user_session.get("chat_profile")
    return PROFILES[profile][0] if profile in PROFILES else CFG.escalation.mode


def _index_of(values: list[str], value: Any, default: str) -> int:
    return values.index(value if value in values else default)


def _settings_panel(saved: Mapping[str, Any], mode: str) -> cl.ChatSettings:
    """The settings panel, showing `saved` values (a resumed thread's) over rag.yaml's."""
    esc = CFG.escalation

    def num(key: str, default: float) -> float:
        value = saved.get(key)
        return (
            float(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else default
        )

    return cl.ChatSettings(
        [
            Select(id="retriever", label="Retriever", values=RETRIEVERS,
                   initial_index=_index_of(RETRIEVERS, saved.get("retriever"), CFG.retrieval.retriever)),
            Slider(id="top_k", label="Passages (top k)", initial=num("top_k", CFG.retrieval.top_k),
                   min=1, max=20, step=1),
            Select(id="mode", label="Escalation mode", values=MODES,
                   initial_index=_index_of(MODES, saved.get("mode"), mode)),
            Select(id="strategy", label="When escalating", values=STRATEGIES,
                   initial_index=_index_of(STRATEGIES, saved.get("strategy"), esc.strategy)),
            Slider(id="min_draft_chars", label="Short-draft threshold (characters)",
                   initial=num("min_draft_chars", esc.min_draft_chars), min=0, max=400, step=10),
            Slider(id="weak_context", label="Weak-context threshold (score of the retriever in use; -1 = rag.yaml)",
                   initial=num("weak_context", -1), min=-1, max=20, step=0.05),
            Slider(id="temperature", label="Temperature",
                   initial=num("temperature", CFG.models.slm.temperature), min=0, max=1.5, step=0.05),
            Switch(id="demo", label="Demo mode (temperature 0, fixed seed)",
                   initial=saved.get("demo") is True),
        ]
    )  # fmt: skip


@cl.on_chat_start
async def on_chat_start() -> None:
    mode = _profile_mode()
    await _settings_panel({}, mode).send()
    cl.user_session.set("opts", AskOptions(mode=mode))  # type: ignore[arg-type]
    cl.user_session.set("stats", SessionStats())
    name = CFG.retrieval.retriever
    if name in ASSISTANT.index.open_names():
        await cl.Message(content=WELCOME).send()
        return
    # First chat of this process: say that the index is being opened (a first build can take a
    # while), then turn the same message into the welcome with what the index did.
    welcome = cl.Message(content=f"⏳ Opening the {name} index of `{CFG.corpus.path}`…")
    await welcome.send()
    try:
        _, status = await cl.make_async(ASSISTANT.index.open)(name)
        line = f"ℹ️ {status.message} ({status.seconds:.1f} s)."
    except RagError as exc:
        line = f"⚠️ The {name} index could not be opened: {exc}"
    welcome.content = f"{WELCOME}\n\n{line}"
    await welcome.update()


@cl.on_chat_resume
async def on_chat_resume(thread: ThreadDict) -> None:
    """A thread reopened from the sidebar continues with the settings it was saved with."""
    saved = settings_from_thread(thread)
    mode = _profile_mode()
    await _settings_panel(saved, mode).send()
    cl.user_session.set(
        "opts", options_from_settings(saved, retrievers=tuple(RETRIEVERS), default_mode=mode)
    )
    cl.user_session.set("stats", SessionStats())  # /stats counts the answers after resuming
    log.info("resumed thread %s (%d steps)", thread.get("id"), len(thread.get("steps") or []))


@cl.on_settings_update
async def on_settings_update(settings: dict[str, Any]) -> None:
    opts = options_from_settings(settings, retrievers=tuple(RETRIEVERS))
    cl.user_session.set("opts", opts)
    demo_note = f" · demo mode (temperature 0, seed {DEMO_SEED})" if opts.seed is not None else ""
    await cl.Message(
        content=f"Settings applied to the next question: retriever **{opts.retriever}**, "
        f"top k **{opts.top_k}**, mode **{opts.mode}**, strategy **{opts.strategy}**{demo_note}."
    ).send()


def _hits_markdown(ev: Retrieved) -> str:
    if not ev.hits:
        return f"**{ev.retriever}** found nothing relevant ({ev.retrieval_ms:.1f} ms)."
    lines = [f"**{ev.retriever}** · {len(ev.hits)} passages · {ev.retrieval_ms:.1f} ms", ""]
    for h in ev.hits:
        where = f" › {h.chunk.heading}" if h.chunk.heading else ""
        lines.append(f"{h.rank}. {h.chunk.title}{where} — `{h.chunk.path}` (score {h.score:.3f})")
    return "\n".join(lines)


def _ms(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _footer(done: Done) -> str:
    m = done.metrics
    last = m.stages[-1][1] if m.stages else None
    parts = [m.retriever, done.model, f"retrieval {_ms(m.retrieval_ms)}"]
    if last:
        parts += [f"first token {_ms(last.ttft_ms)}", f"{last.tokens_per_s:.1f} tok/s"]
    parts.append(f"total {m.total_ms / 1000:.1f} s")
    if m.escalated:
        parts.append("escalated")
    return "*" + " · ".join(parts) + "*"


async def _render(question: str, opts: AskOptions) -> None:
    answer = cl.Message(content="")
    compared: list[StageFinished] = []
    step: cl.Step | None = None
    streamed_into_answer = False
    async for ev in ASSISTANT.ask(question, opts):
        if isinstance(ev, Retrieved):
            async with cl.Step(
                name=f"Retrieve ({ev.retriever})",
                type="retrieval",
                icon="search",
                show_input=False,  # the question is right above
            ) as rs:
                rs.input = question
                rs.output = _hits_markdown(ev)
        elif isinstance(ev, ContextPacked):
            pass
        elif isinstance(ev, Notice):
            await cl.Message(content=("⚠️ " if ev.level == "warning" else "ℹ️ ") + ev.text).send()
        elif isinstance(ev, StageStarted):
            if ev.stage in ("draft", "compare"):
                # Sent now but ended later, so not `async with`: set what it would have (the
                # parent, else the step lands below the answer; start and end, which drive
                # "Using…" and the collapse). Open while the draft streams, folded after.
                parent = cl.context.current_step
                step = cl.Step(
                    name=f"{ev.stage.title()} · {ev.model}",
                    type="llm",
                    icon="notebook-pen",
                    parent_id=parent.id if parent else None,
                    default_open=True,
                    auto_collapse=True,
                )
                step.start = utc_now()
                await step.send()
        elif isinstance(ev, Token):
            if step is not None and ev.stage in ("draft", "compare"):
                await step.stream_token(ev.text)
            else:
                if not streamed_into_answer:
                    # stream_token leaves created_at unset, and a stored step without it sorts
                    # before its parent, so a resumed thread would lose the answer.
                    answer.created_at = utc_now()
                await answer.stream_token(ev.text)
                streamed_into_answer = True  # sent now: _finish updates it, not sends it
        elif isinstance(ev, StageFinished):
            if ev.stage == "compare":
                compared.append(ev)
            if step is not None:
                if ev.text:
                    step.output = ev.text + ("\n\n*(cut off)*" if ev.incomplete else "")
                else:  # the model failed before a word; a notice says why
                    step.is_error = True
                    step.output = "*No answer: the model failed (see the message below).*"
                step.end = utc_now()
                await step.update()
                step = None
        elif isinstance(ev, Escalated):
            async with cl.Step(name="Escalate", type="tool", icon="arrow-up-right") as es:
                es.output = ev.decision.reason
        elif isinstance(ev, Failed):
            await cl.Message(content=f"⚠️ {ev.message}").send()
            return
        elif isinstance(ev, Done):
            stats = cl.user_session.get("stats")
            if isinstance(stats, SessionStats):
                stats.add(ev)
            await _finish(answer, ev, streamed_into_answer, compared)


_LIST_MARK = re.compile(r"^(?:[-*+]|\d+[.)])\s+")  # a leading list marker would show raw in a cell


def _compare_table(compared: list[StageFinished]) -> str:
    """Both models' answers side by side with their timings and token counts."""
    if not compared:
        return ""
    cells = [
        (
            c.usage.model,
            _LIST_MARK.sub("", " ".join(c.text.split())).replace("|", "\\|") or "*(failed)*",
            c.usage,
        )
        for c in compared
    ]
    head = "| | " + " | ".join(f"**{m}**" for m, _, _ in cells) + " |"
    sep = "|---" * (len(cells) + 1) + "|"
    rows = [
        "| answer | " + " | ".join(t for _, t, _ in cells) + " |",
        "| first token | " + " | ".join(_ms(u.ttft_ms) for _, _, u in cells) + " |",
        "| total | " + " | ".join(f"{u.total_ms / 1000:.1f} s" for _, _, u in cells) + " |",
        "| tokens (prompt / answer) | "
        + " | ".join(f"{u.prompt_tokens} / {u.completion_tokens}" for _, _, u in cells)
        + " |",
        "| tokens/s | " + " | ".join(f"{u.tokens_per_s:.1f}" for _, _, u in cells) + " |",
    ]
    return "\n".join([head, sep, *rows])


async def _finish(
    answer: cl.Message, done: Done, streamed: bool, compared: list[StageFinished]
) -> None:
    elements: list[Any] = []
    seen: set[int] = set()
    for c in done.citations:
        if c.source is None or c.n in seen:
            continue
        seen.add(c.n)
        ch = c.source.chunk
        heading = f"\n\n*Section:* {ch.heading}" if ch.heading else ""
        elements.append(
            cl.Text(
                name=f"[{c.n}]",
                # Chainlit (>= 2.11) opens the panel by itself with every side element of the
                # chat stacked, so each one names its marker.
                content=f"**[{c.n}] {ch.title}**\n\n*Path:* `{ch.path}`{heading}\n\n---\n\n{ch.text}",
                display="side",
            )
        )
    unverified = sorted({c.n for c in done.citations if c.source is None})
    parts = [done.answer]
    if compared:  # the table holds both answers; the final answer is shown only if both failed
        parts = [_compare_table(compared)] + (
            [done.answer] if not any(c.text for c in compared) else []
        )
    if unverified:
        marks = ", ".join(f"[{n}]" for n in unverified)
        parts.append(f"⚠️ Unverified citation {marks}: no such passage was retrieved.")
    if done.metrics.incomplete:
        parts.append(
            "⚠️ *This answer is incomplete — the model stopped mid-answer. Ask again to retry.*"
        )
    answer.content = "\n\n".join([*parts, _footer(done)])
    # The model name only: Chainlit looks the author up as an avatar and refuses names with
    # brackets; the footer says when the answer was escalated.
    answer.author = done.model
    # Stored with the answer, so a thread resumed later continues with these settings.
    answer.metadata = {**(answer.metadata or {}), SETTINGS_KEY: _panel_values()}
    answer.elements = elements  # type: ignore[assignment]
    if streamed:
        await answer.update()
    else:
        await answer.send()


async def _stats() -> None:
    stats = cl.user_session.get("stats")
    if not isinstance(stats, SessionStats) or not stats.answers:
        await cl.Message(
            content="No answers yet in this session: ask something first." + _report_note()
        ).send()
        return
    per = stats.per_model()
    fig = go.Figure(
        [
            go.Bar(
                name="first token (median ms)", x=list(per), y=[r["ttft_ms"] for r in per.values()]
            ),
            go.Bar(name="total (median ms)", x=list(per), y=[r["total_ms"] for r in per.values()]),
        ]
    )
    fig.update_layout(
        barmode="group",
        title=f"Latency per model · escalation rate {stats.escalation_rate:.0%}",
        yaxis_title="ms",
        height=360,
    )
    await cl.Message(
        content=stats.summary() + _report_note(),
        elements=[cl.Plotly(name="session chart", figure=fig, display="inline")],
    ).send()


async def _uploads(message: cl.Message) -> None:
    for element in message.elements or []:
        path = getattr(element, "path", None)
        name = getattr(element, "name", None) or "upload"
        if not path:
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            result = await cl.make_async(add_upload)(CFG, ASSISTANT.index, name, data)
        except RagError as exc:
            await cl.Message(content=f"⚠️ {name} was not added: {exc}").send()
        else:
            await cl.Message(content=("ℹ️ " if result.duplicate else "✅ ") + result.message).send()


@cl.on_message
async def on_message(message: cl.Message) -> None:
    try:
        await _uploads(message)
        text = message.content.strip()
        if message.elements and not text:
            return
        if text == "/stats":
            await _stats()
            return
        opts = _opts()
        if text.startswith("/compare"):
            text = text[len("/compare") :].strip()
            opts = dataclasses.replace(opts, mode="compare")
            if not text:
                await cl.Message(content="Usage: `/compare your question`" + _report_note()).send()
                return
        await _render(message.content if not text.startswith("/") else text, opts)
    except Exception:  # the user gets a sentence, the log gets the traceback
        log.exception("answering failed")
        await cl.Message(
            content="⚠️ Something went wrong while answering (details are in the server log). "
            "Your documents and settings are unchanged; please try again."
        ).send()


# -- routes: the streaming playground (rag/playground.py streams) and stored element files --------

PLAYGROUND_HTML = Path(__file__).resolve().parent / "public" / "playground.html"
_routes = APIRouter(prefix=chainlit_config.run.root_path)


@_routes.get("/playground", include_in_schema=False)
async def playground_page() -> FileResponse:
    return FileResponse(
        PLAYGROUND_HTML, media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


@_routes.post("/playground/stream")
async def playground_stream(
    request: Request, _user: Annotated[Any, Depends(get_current_user)]
) -> Response:
    """Server-sent events: token…, then done (timings) or error. Signed-in users only when sign-in is on."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        return JSONResponse(
            {"error": f"The request is over {MAX_BODY_BYTES // 1_000_000} MB; paste less text."},
            status_code=413,
        )
    try:
        role, prompt, reference = parse_request(await request.json())
    except ValueError as exc:  # not JSON, or the wrong shape
        return JSONResponse({"error": f"Bad playground request: {exc}"}, status_code=400)
    return StreamingResponse(
        sse_stream(playground_events(CFG, role, prompt, reference)),
        media_type="text/event-stream",  # also keeps Chainlit's gzip middleware from buffering it
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@_routes.get(FILES_ROUTE + "/{object_key:path}", include_in_schema=False)
async def history_file(
    object_key: str, user: Annotated[Any, Depends(get_current_user)]
) -> Response:
    """An element file of a stored thread, to its owner (anyone when sign-in is off)."""
    try:
        path = stored_file(ELEMENT_FILES, object_key)
    except ValueError:
        path = None
    owner = getattr(user, "id", None)
    allowed = may_read(object_key, owner) and not (AUTH.enabled and owner is None)
    if path is None or not path.is_file() or not allowed:
        return JSONResponse({"error": "no such file"}, status_code=404)
    media = mimetypes.guess_type(path.name)[0] or "text/plain; charset=utf-8"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, no-cache"})


# -- the latest `rag compare` report (rag/report.py writes <data_dir>/reports/latest.html) ------

LATEST_REPORT_ROUTE = "/reports/latest"


def _report_note() -> str:
    """A line linking the latest small-vs-large report, or saying how to make one."""
    if (CFG.data_dir / "reports" / "latest.html").is_file():
        url = chainlit_config.run.root_path + LATEST_REPORT_ROUTE
        return f"\n\n📊 [Small vs large model: the latest report]({url}) (from `rag compare`)"
    return "\n\nNo small-vs-large report yet: run `rag compare` to make one."


@_routes.get(LATEST_REPORT_ROUTE, include_in_schema=False)
async def latest_report(user: Annotated[Any, Depends(get_current_user)]) -> Response:
    """The report page, to signed-in users when sign-in is on (it names questions and settings)."""
    path = CFG.data_dir / "reports" / "latest.html"
    if AUTH.enabled and getattr(user, "id", None) is None:
        return JSONResponse({"error": "sign in first"}, status_code=401)
    if not path.is_file():
        return JSONResponse({"error": "no report yet: run `rag compare`"}, status_code=404)
    return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-cache"})


def _serve_before_chainlit(router: APIRouter) -> None:
    """Add `router`'s routes ahead of Chainlit's catch-all GET /{full_path:path}, which serves the chat."""
    routes = chainlit.server.app.router.routes
    before = len(routes)
    chainlit.server.app.include_router(router)
    added = routes[before:]
    del routes[before:]

    # `chainlit run -w` runs this file again on changes: replace the routes it added last time.
    state = chainlit.server.app.state
    previous = {id(r) for r in getattr(state, "rag_routes", [])}
    routes[:] = [*added, *(r for r in routes if id(r) not in previous)]
    state.rag_routes = added


_serve_before_chainlit(_routes)
