"""Local knowledge assistant: retrieval, small-model drafts, large-model escalation.

The public surface: load_config, build_assistant, the protocols (Retriever, ChatModel,
EscalationPolicy) and the errors. The assistant and the model protocols are imported on first
use, so `import rag` (and `rag --help`) does not load the model clients.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rag.config import Config, load_config
from rag.errors import (
    ConfigError,
    CorpusError,
    IndexError_,
    ModelError,
    RagError,
    RetrieverUnavailable,
)
from rag.retrieval.base import Retriever

if TYPE_CHECKING:
    from rag.assistant import AskOptions, Assistant, build_assistant
    from rag.escalation import EscalationPolicy
    from rag.models.base import ChatModel

_LAZY = {
    "AskOptions": "rag.assistant",
    "Assistant": "rag.assistant",
    "build_assistant": "rag.assistant",
    "ChatModel": "rag.models.base",
    "EscalationPolicy": "rag.escalation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rag' has no attribute {name!r}")


__all__ = [
    "AskOptions",
    "Assistant",
    "ChatModel",
    "Config",
    "ConfigError",
    "CorpusError",
    "EscalationPolicy",
    "IndexError_",
    "ModelError",
    "RagError",
    "Retriever",
    "RetrieverUnavailable",
    "build_assistant",
    "load_config",
]
