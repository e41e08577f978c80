"""Frozen value types shared by every layer, and the events the assistant yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Document:
    """One source file, loaded and normalised to plain text with its sections."""

    id: str  # path relative to the corpus root, POSIX separators
    path: str  # same as id; kept separate so uploads can live elsewhere later
    title: str
    sections: tuple[Section, ...]
    sha256: str  # hash of the raw file bytes


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path (e.g. ("Runbook", "Rollback"))."""

    headings: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Chunk:
    """A retrievable passage. ``id`` is stable: path + heading path + ordinal."""

    id: str
    doc_id: str
    path: str
    title: str
    heading: str  # heading path joined with " > "
    text: str
    ordinal: int  # position of the chunk within its document


@dataclass(frozen=True)
class Hit:
    """A chunk ranked for a query. ``rank`` starts at 1."""

    chunk: Chunk
    score: float
    rank: int


@dataclass(frozen=True)
class Source:
    """A numbered source shown to the model and the user: marker [n] -> chunk."""

    n: int
    hit: Hit

    @property
    def chunk(self) -> Chunk:
        return self.hit.chunk


@dataclass(frozen=True)
class Usage:
    """What one model call cost in time and tokens."""

    model: str
    ttft_ms: float
    total_ms: float
    prompt_tokens: int
    completion_tokens: int
    tokens_estimated: bool  # True when the server reported no usage and we counted
    # mean/min log-probability of the answer's tokens (citation markers excluded);
    # None when the provider returned none ("unknown", never "confident")
    logprob_mean: float | None = None
    logprob_min: float | None = None
    # Server-side split of the call (rag.models.llama_cpp_server and llama.cpp's own server
    # report it in a final "timings" chunk); None = the provider did not report it.
    queue_ms: float | None = None  # waiting at the server behind other requests
    prompt_ms: float | None = None  # reading the prompt (up to the first sampled token)
    prompt_eval_tokens: int | None = None  # prompt tokens actually read
    cached_tokens: int | None = None  # prompt prefix reused from the server's cache
    decode_ms: float | None = None  # generating after the first token
    sent_ms: float = 0.0  # client side: building and sending the request until the response began

    @property
    def tokens_per_s(self) -> float:
        """Decoding speed: server-measured when reported, else from the client's clock."""
        if self.decode_ms is not None:
            return (
                (self.completion_tokens - 1) / (self.decode_ms / 1000.0)
                if self.completion_tokens > 1 and self.decode_ms > 0
                else 0.0
            )
        gen_ms = self.total_ms - self.ttft_ms
        if self.completion_tokens <= 1 or gen_ms <= 0:
            return 0.0
        return (self.completion_tokens - 1) / (gen_ms / 1000.0)

    @property
    def prompt_tokens_per_s(self) -> float | None:
        """Prompt reading speed over the tokens actually read; None when not reported."""
        if self.prompt_ms is None or self.prompt_ms <= 0:
            return None
        n = self.prompt_eval_tokens if self.prompt_eval_tokens is not None else self.prompt_tokens
        return n / (self.prompt_ms / 1000.0) if n > 0 else None


@dataclass(frozen=True)
class Decision:
    """Whether to escalate, the signal values behind it and a sentence a person understands."""

    escalate: bool
    stage: Literal["before", "after"]
    reason: str
    signals: dict[str, Any] = field(default_factory=dict)
    abstain: bool = False


@dataclass(frozen=True)
class Sufficiency:
    """How likely the retrieved passages answer the question, and the features behind it."""

    features: dict[str, float | None]
    probability: float | None  # None when no sufficiency model is configured

    def describe(self) -> str:
        """For people: "context sufficiency 0.82; best passage holds 75% of the question's weight"."""
        cov = self.features.get("coverage_idf")
        parts = []
        if self.probability is not None:
            parts.append(f"context sufficiency {self.probability:.2f}")
        if cov is not None:
            parts.append(f"best passage holds {cov:.0%} of the question's weight")
        gap = self.features.get("typed_gap")
        if gap is not None and gap >= 0.1:
            parts.append(
                f"the question asks for a number; the best sentence with one holds {gap:.0%}"
                " less of its weight"
            )
        return "; ".join(parts) or "no context signals"


# ---- events the assistant yields (rendered by webui/ and the CLI) ----


@dataclass(frozen=True)
class Retrieved:
    retriever: str
    hits: tuple[Hit, ...]
    retrieval_ms: float
    sufficiency: Sufficiency | None = None


@dataclass(frozen=True)
class ContextPacked:
    """Which hits made it into the prompt; ``dropped`` > 0 means context was cut to fit."""

    sources: tuple[Source, ...]
    dropped: int
    prompt_tokens: int
    passage_tokens_before: int = 0  # estimated tokens of the retrieved passages, whole
    passage_tokens_after: int = 0  # and after compression (equal when it is off)


@dataclass(frozen=True)
class StageStarted:
    stage: Literal["draft", "answer", "refine", "compare"]
    model: str


@dataclass(frozen=True)
class Token:
    text: str
    stage: Literal["draft", "answer", "refine", "compare"]
    model: str


@dataclass(frozen=True)
class StageFinished:
    stage: Literal["draft", "answer", "refine", "compare"]
    usage: Usage
    text: str
    incomplete: bool = False


@dataclass(frozen=True)
class Escalated:
    decision: Decision


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not an error (e.g. a model fell back)."""

    text: str
    level: Literal["info", "warning"] = "info"


@dataclass(frozen=True)
class Citation:
    """A marker found in the answer; ``source`` is None when it names nothing retrieved."""

    n: int
    source: Source | None


@dataclass(frozen=True)
class Metrics:
    retriever: str
    models: tuple[str, ...]
    prep_ms: float
    retrieval_ms: float
    total_ms: float
    stages: tuple[tuple[str, Usage], ...]
    escalated: bool
    reason: str
    cost: float
    incomplete: bool = False
    sufficiency: float | None = None
    signals: dict[str, Any] = field(default_factory=dict)  # the router's inputs and outputs
    packing_ms: float = 0.0  # choosing and formatting the passages for the prompt


@dataclass(frozen=True)
class Done:
    answer: str
    model: str
    sources: tuple[Source, ...]
    citations: tuple[Citation, ...]
    metrics: Metrics
    abstained: bool = False


@dataclass(frozen=True)
class Failed:
    """The request could not be answered at all; ``message`` is for the user."""

    message: str
    kind: str


Event = (
    Retrieved
    | ContextPacked
    | StageStarted
    | Token
    | StageFinished
    | Escalated
    | Notice
    | Done
    | Failed
)
