"""Chat models: the ChatModel protocol, the OpenAI-compatible client, the embedded server."""

from __future__ import annotations

from typing import Literal

from rag.config import Config, base_url_for
from rag.models.base import CallRecord, ChatModel, Message
from rag.models.foundry import FoundryLocalModel
from rag.models.openai_compat import OpenAICompatModel, estimate_tokens


def make_chat_model(
    cfg: Config, role: Literal["slm", "llm"]
) -> OpenAICompatModel | FoundryLocalModel:
    """The small (slm) or large (llm) model as configured in rag.yaml."""
    mcfg = cfg.models.slm if role == "slm" else cfg.models.llm
    if mcfg.provider == "foundry-local":
        return FoundryLocalModel(mcfg, cfg.models.foundry, cfg.models.timeouts, cfg.data_dir)
    return OpenAICompatModel(
        mcfg, base_url_for(mcfg, cfg.models.embedded, role), cfg.models.timeouts
    )


__all__ = [
    "CallRecord",
    "ChatModel",
    "FoundryLocalModel",
    "Message",
    "OpenAICompatModel",
    "estimate_tokens",
    "make_chat_model",
]
