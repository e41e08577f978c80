"""Chat models: the ChatModel protocol, the OpenAI-compatible client, the embedded server."""

from __future__ import annotations

from typing import Literal

from rag.config import Config, base_url_for
from rag.models.base import CallRecord, ChatModel, Message
from rag.models.openai_compat import OpenAICompatModel, estimate_tokens


def _foundry_model_id(alias: str) -> str:
    """Resolve a Foundry Local alias (phi-4-mini) to its model id when the SDK is installed."""
    try:
        from foundry_local import FoundryLocalManager
    except ImportError:
        return alias
    try:
        info = FoundryLocalManager(bootstrap=False).get_model_info(alias)
    except Exception:  # the SDK talks to a local service that may be down; keep the alias
        return alias
    return str(getattr(info, "id", alias) or alias)


def make_chat_model(cfg: Config, role: Literal["slm", "llm"]) -> OpenAICompatModel:
    """The small (slm) or large (llm) model as configured in rag.yaml."""
    mcfg = cfg.models.slm if role == "slm" else cfg.models.llm
    model_id = _foundry_model_id(mcfg.model) if mcfg.provider == "foundry-local" else None
    return OpenAICompatModel(
        mcfg, base_url_for(mcfg, cfg.models.embedded, role), cfg.models.timeouts, model_id=model_id
    )


__all__ = [
    "CallRecord",
    "ChatModel",
    "Message",
    "OpenAICompatModel",
    "estimate_tokens",
    "make_chat_model",
]
