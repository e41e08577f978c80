"""Chainlit hooks only: each one hands the shared AppContext to the webui/ module doing the work."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any

import chainlit as cl
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.types import ThreadDict

from rag import RagError
from rag.assistant import AskOptions
from rag.chat_settings import DEMO_SEED, options_from_settings, settings_from_thread
from rag.stats import SessionStats
from webui import answer, commands, history, offline, render, routes, settings, signin, uploads
from webui.context import build_context
from webui.housekeeping import keep_purging

os.environ.setdefault("HF_HUB_OFFLINE", "1")
log = logging.getLogger("rag.app")

offline.serve_offline_html()
CTX = build_context()
offline.use_session_files(CTX.session_files)


_housekeeping: set[asyncio.Task[None]] = set()  # a reference, or the task could be collected


@cl.on_app_startup
async def start_housekeeping() -> None:
    """Drop what closed chats leave in memory, every 5 s (webui/housekeeping.py says why)."""
    _housekeeping.add(asyncio.create_task(keep_purging()))


@cl.data_layer
def history_layer() -> SQLAlchemyDataLayer:
    return history.data_layer(CTX)


if CTX.auth.users is not None:
    _USERS = CTX.auth.users

    @cl.password_auth_callback
    async def password_auth(username: str, password: str) -> cl.User | None:
        return signin.sign_in(_USERS, username, password)


def _opts() -> AskOptions:
    opts = cl.user_session.get("opts")
    return opts if isinstance(opts, AskOptions) else AskOptions()


def _profile_mode() -> str:
    return settings.profile_mode(CTX.cfg, cl.user_session.get("chat_profile"))


@cl.set_chat_profiles
async def chat_profiles(_user: Any = None) -> list[cl.ChatProfile]:
    return settings.chat_profiles()


@cl.on_chat_start
async def on_chat_start() -> None:
    mode = _profile_mode()
    await settings.settings_panel(CTX.cfg, {}, mode).send()
    cl.user_session.set("opts", AskOptions(mode=mode))  # type: ignore[arg-type]
    cl.user_session.set("stats", SessionStats())
    name = CTX.cfg.retrieval.retriever
    if name in CTX.assistant.index.open_names():
        await cl.Message(content=render.WELCOME).send()
        return
    # First chat of this process: say that the index is being opened (a first build can take a
    # while), then turn the same message into the welcome with what the index did.
    welcome = cl.Message(content=f"⏳ Opening the {name} index of `{CTX.cfg.corpus.path}`…")
    await welcome.send()
    try:
        status = await cl.make_async(CTX.assistant.prepare)(name)
        line = f"ℹ️ {status.message} ({status.seconds:.1f} s)."
    except RagError as exc:
        line = f"⚠️ The {name} index could not be opened: {exc}"
    welcome.content = f"{render.WELCOME}\n\n{line}"
    await welcome.update()


@cl.on_chat_resume
async def on_chat_resume(thread: ThreadDict) -> None:
    """A thread reopened from the sidebar continues with the settings it was saved with."""
    saved = settings_from_thread(thread)
    mode = _profile_mode()
    await settings.settings_panel(CTX.cfg, saved, mode).send()
    cl.user_session.set("opts", options_from_settings(saved, default_mode=mode))
    cl.user_session.set("stats", SessionStats())  # /stats counts the answers after resuming
    log.info("resumed thread %s (%d steps)", thread.get("id"), len(thread.get("steps") or []))


@cl.on_settings_update
async def on_settings_update(values: dict[str, Any]) -> None:
    opts = options_from_settings(values)
    cl.user_session.set("opts", opts)
    demo_note = f" · demo mode (temperature 0, seed {DEMO_SEED})" if opts.seed is not None else ""
    await cl.Message(
        content=f"Settings applied to the next question: retriever **{opts.retriever}**, "
        f"top k **{opts.top_k}**, mode **{opts.mode}**, strategy **{opts.strategy}**{demo_note}."
    ).send()


@cl.on_message
async def on_message(message: cl.Message) -> None:
    try:
        await uploads.add_attachments(CTX, message)
        if message.elements and not message.content.strip():
            return
        command = commands.parse_command(message.content)
        if command.kind == "stats":
            await commands.show_stats(CTX.cfg.data_dir)
        elif command.kind == "usage":
            await cl.Message(content=command.text + commands.report_note(CTX.cfg.data_dir)).send()
        elif command.kind == "compare":
            await answer.answer(CTX, command.text, dataclasses.replace(_opts(), mode="compare"))
        else:
            await answer.answer(CTX, command.text, _opts())
    except Exception:  # the user gets a sentence, the log gets the traceback
        log.exception("answering failed")
        await cl.Message(
            content="⚠️ Something went wrong while answering (details are in the server log). "
            "Your documents and settings are unchanged; please try again."
        ).send()


routes.serve_before_chainlit(routes.make_router(CTX))
