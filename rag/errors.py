"""One small exception tree. Messages name the bad value, the valid choices and the fix."""


class RagError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(RagError):
    """rag.yaml, an environment override or a CLI/setting value is invalid."""


class CorpusError(RagError):
    """A document or the corpus folder cannot be read or is not acceptable."""


class IndexError_(RagError):
    """The persisted index is missing, corrupt, locked or out of date."""


class RetrieverUnavailable(RagError):
    """A retriever cannot run here (e.g. model artifacts missing); the message says the fix."""


class ModelError(RagError):
    """A model server failed: refused, HTTP error, timeout, malformed or cut stream."""

    def __init__(self, message: str, *, kind: str = "error", partial: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.partial = partial


class InputError(RagError):
    """A user message or upload is not acceptable; the message says why and what to do."""
