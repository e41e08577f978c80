"""Files attached to a chat message, added to the corpus and the open indexes."""

from __future__ import annotations

import chainlit as cl

from rag import RagError
from rag.uploads import add_upload
from webui.context import AppContext


async def add_attachments(ctx: AppContext, message: cl.Message) -> None:
    """Add each attached file, saying in the chat what happened to it."""
    for element in message.elements or []:
        path = getattr(element, "path", None)
        name = getattr(element, "name", None) or "upload"
        if not path:
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            result = await cl.make_async(add_upload)(ctx.cfg, ctx.assistant.index, name, data)
        except RagError as exc:
            await cl.Message(content=f"⚠️ {name} was not added: {exc}").send()
        else:
            await cl.Message(content=("ℹ️ " if result.duplicate else "✅ ") + result.message).send()
