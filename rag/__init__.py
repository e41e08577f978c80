"""Local knowledge assistant: retrieval, small-model drafts, large-model escalation.

The public surface: load_config, build_assistant, the protocols and the errors.
"""

from rag.config import Config, load_config
from rag.errors import (
    ConfigError,
    CorpusError,
    IndexError_,
    ModelError,
    RagError,
    RetrieverUnavailable,
)

__all__ = [
    "Config",
    "ConfigError",
    "CorpusError",
    "IndexError_",
    "ModelError",
    "RagError",
    "RetrieverUnavailable",
    "load_config",
]
