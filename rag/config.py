"""Typed configuration: rag.yaml validated into frozen pydantic models, with env overrides.

Overrides use ``RAG__SECTION__KEY=value`` (e.g. ``RAG__RETRIEVAL__RETRIEVER=bm25``); values
are parsed as YAML scalars so numbers and booleans work. ``FOUNDRY_LOCAL_ENDPOINT`` and
``MILVUS_URI`` are honoured as in the workshop samples.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rag.errors import ConfigError

# Every list of choices is written once, here; the registry, the CLI, the settings panel and the
# history mapping derive theirs with typing.get_args (tests/unit/test_choices.py checks it).
RetrieverName = Literal["lexical", "bm25", "embedding", "hybrid"]
Provider = Literal["embedded", "foundry-local", "ollama", "openai-compatible"]
Mode = Literal["auto", "never", "always", "compare"]
Strategy = Literal["answer", "refine"]
Role = Literal["slm", "llm"]
Store = Literal["local", "milvus"]
MilvusKind = Literal["bm25", "embedding", "hybrid"]  # what a Milvus collection can hold

RETRIEVER_NAMES: tuple[RetrieverName, ...] = get_args(RetrieverName)
PROVIDERS: tuple[Provider, ...] = get_args(Provider)
MODES: tuple[Mode, ...] = get_args(Mode)
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
ROLES: tuple[Role, ...] = get_args(Role)

# A number per retriever: a key that is not a retriever name fails validation.
PerRetriever = dict[RetrieverName, float]


def per_retriever(values: PerRetriever, name: str) -> float | None:
    """``values[name]`` for a retriever named at run time; None when it has no entry."""
    return next((value for key, value in values.items() if key == name), None)


PROVIDER_URLS: dict[str, str] = {
    "foundry-local": "http://localhost:5273/v1",
    "ollama": "http://localhost:11434/v1",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusConfig(_Model):
    """Where documents live and how they are cut into chunks."""

    path: Path = Path("docs_corpus")
    uploads_dir: Path = Path("docs_corpus/uploads")
    chunk_words: int = Field(180, ge=20, le=2000)
    overlap_words: int = Field(30, ge=0, le=500)
    max_file_mb: float = Field(10.0, gt=0)
    exclude: tuple[str, ...] = ("README.md",)  # glob patterns relative to corpus.path

    @model_validator(mode="after")
    def _overlap_below_size(self) -> CorpusConfig:
        if self.overlap_words >= self.chunk_words:
            raise ValueError(
                f"corpus.overlap_words ({self.overlap_words}) must be below "
                f"corpus.chunk_words ({self.chunk_words})"
            )
        return self


class BM25Config(_Model):
    k1: float = Field(1.5, gt=0)
    b: float = Field(0.75, ge=0, le=1)
    stemming: bool = True
    stopwords: bool = True


class EmbeddingConfig(_Model):
    """ONNX int8 by default; fp32 and torch are there for parity checks."""

    backend: Literal["onnx-int8", "onnx-fp32", "torch"] = "onnx-int8"
    batch_size: int = Field(32, ge=1, le=1024)
    max_seq_length: int = Field(256, ge=16, le=512)
    threads: int = Field(0, ge=0)  # 0 lets onnxruntime choose


class HybridConfig(_Model):
    method: Literal["rrf", "minmax"] = "minmax"
    rrf_k: int = Field(10, ge=1)
    alpha: float = Field(0.5, ge=0, le=1)  # weight on the dense (embedding) score
    candidates: int = Field(100, ge=1)
    # added to the fused score times the question's IDF share held by a passage's document title
    title_boost: float = Field(0.2, ge=0, le=1)


class MilvusConfig(_Model):
    """Milvus (milvus-lite file, milvus-lite server, standalone or cluster) as the retrieval store."""

    uri: str = ".rag/milvus.db"  # a .db path = embedded milvus-lite; http://host:19530 = a server
    token_env: str | None = None  # env variable holding "user:password" or an API token
    collection: str = "docs_chunks"
    index_type: Literal["HNSW", "FLAT", "AUTOINDEX"] = "HNSW"
    hnsw_m: int = Field(16, ge=4, le=64)
    hnsw_ef_construction: int = Field(200, ge=8)
    search_ef: int = Field(64, ge=8)
    rrf_k: int = Field(60, ge=1)
    batch_size: int = Field(256, ge=1)
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0)


class RetrievalConfig(_Model):
    """Which retriever answers by default and how each one is tuned."""

    retriever: RetrieverName = "hybrid"
    store: Store = "local"  # where bm25/embedding/hybrid indexes live
    milvus: MilvusConfig = MilvusConfig()
    top_k: int = Field(5, ge=1, le=50)
    bm25: BM25Config = BM25Config()
    embedding: EmbeddingConfig = EmbeddingConfig()
    hybrid: HybridConfig = HybridConfig()


class ContextConfig(_Model):
    """How retrieved passages are packed into the prompt (context compression)."""

    compress: bool = True  # keep the question's sentences (with neighbours, headings) per passage
    budget_tokens: int = Field(330, ge=16, le=8000)  # estimated tokens for all passages together
    whole_passage_tokens: int = Field(60, ge=0)  # passages this short go in untouched
    neighbours: int = Field(1, ge=0, le=5)  # sentences kept either side of a chosen one
    # embedding retrievers also score each sentence by its cosine to the question: + weight x
    # the question's IDF total x (cosine - floor), so answers in other words are kept (0 = off)
    dense_weight: float = Field(0.5, ge=0, le=10)
    dense_floor: float = Field(0.2, ge=-1, le=1)  # cosines below this add nothing
    # passages go in whole when the top passage's title and heading hold this share of the
    # question's IDF weight ("What is the on-call escalation policy?"); above 1 = never
    broad_share: float = Field(0.67, ge=0, le=1.01)
    # passages go in whole when no sentence of the two best passages scores this share of the
    # question's IDF weight (words, cosine and answer type): choosing sentences would be a guess
    # (0 = never)
    whole_below: float = Field(0.55, ge=0, le=10)
    # the kept parts of one document's passages go into one source: its title and <source>
    # wrapper (about 20 tokens) are printed once, not once per passage (off: README, dev)
    merge_documents: bool = False


class ModelConfig(_Model):
    """One chat model on one OpenAI-compatible server."""

    provider: Provider = "embedded"
    model: str
    base_url: str | None = None  # None: the provider's default
    api_key_env: str | None = None  # name of the env variable holding the key
    context_window: int = Field(4096, ge=512)
    max_tokens: int = Field(256, ge=16)
    temperature: float = Field(0.1, ge=0, le=2)
    price_in_per_1k: float = Field(0.0, ge=0)  # hypothetical cost per 1k prompt tokens
    price_out_per_1k: float = Field(0.0, ge=0)  # and per 1k completion tokens
    # ask for per-token log-probabilities (answer confidence); llama.cpp needs logits_all on
    logprobs: bool = False


class TimeoutsConfig(_Model):
    connect_s: float = Field(5.0, gt=0)
    first_token_s: float = Field(120.0, gt=0)
    total_s: float = Field(300.0, gt=0)
    retries: int = Field(2, ge=0, le=10)  # before the first token only
    backoff_s: float = Field(0.5, ge=0)


class EmbeddedConfig(_Model):
    """The llama.cpp server that `rag models serve` starts when a model's provider is embedded."""

    host: Literal["127.0.0.1"] = "127.0.0.1"
    slm_port: int = Field(8101, ge=1024, le=65535)
    llm_port: int = Field(8102, ge=1024, le=65535)
    slm_file: str = "qwen2.5-coder-0.5b-instruct"
    llm_file: str = "qwen2.5-coder-1.5b-instruct"
    n_ctx: int = Field(4096, ge=512)
    n_threads: int = Field(2, ge=1)
    # Full-vocabulary logits for every prompt token: needed for logprobs, costs prompt reading
    # time (README "Where the time goes" has the measurement).
    slm_logits_all: bool = True
    llm_logits_all: bool = False
    prompt_lookup: bool = False  # n-gram speculative decoding (forces logits_all on)
    prompt_lookup_tokens: int = Field(10, ge=1, le=64)  # tokens drafted per step
    prompt_cache: bool = False  # llama-cpp-python's RAM prompt cache (cache: true)
    warm_up: bool = True  # one short request per model at start, so no user pays the cold load


class FoundryConfig(_Model):
    """How a `foundry-local` model is reached: the Foundry Local service or the SDK in process.

    auto: the service over HTTP when a base_url (or FOUNDRY_LOCAL_ENDPOINT) is set, else the SDK
    in process when foundry-local-sdk is installed, else the service at its default endpoint.
    service: HTTP; without a base_url the SDK's manager starts its web service in this process.
    """

    runtime: Literal["auto", "service", "in-process"] = "auto"
    # A catalog the SDK reads instead of Microsoft's online one (e.g. a loopback server offline).
    catalog_url: str | None = None
    # The SDK's own data (registrations, logs); None: <data_dir>/foundry.
    app_dir: Path | None = None


class ModelsConfig(_Model):
    slm: ModelConfig = ModelConfig(model="qwen2.5-coder-0.5b-instruct", logprobs=True)
    llm: ModelConfig = ModelConfig(model="qwen2.5-coder-1.5b-instruct")
    timeouts: TimeoutsConfig = TimeoutsConfig()
    embedded: EmbeddedConfig = EmbeddedConfig()
    foundry: FoundryConfig = FoundryConfig()

    @model_validator(mode="after")
    def _logprobs_need_logits(self) -> ModelsConfig:
        for role in ("slm", "llm"):
            m: ModelConfig = getattr(self, role)
            if m.logprobs and m.provider == "embedded" and m.base_url is None:
                on = getattr(self.embedded, f"{role}_logits_all") or self.embedded.prompt_lookup
                if not on:
                    raise ValueError(
                        f"models.{role}.logprobs needs the embedded server to keep all logits: "
                        f"set models.embedded.{role}_logits_all: true, or models.{role}.logprobs: false"
                    )
        return self


class LogisticParams(_Model):
    """A fitted logistic model: P = 1 / (1 + exp(-(bias + Σ weight · (x - mean) / scale)))."""

    bias: float = 0.0
    weights: dict[str, float] = {}
    means: dict[str, float] = {}
    scales: dict[str, float] = {}


class RouterConfig(_Model):
    """The router policy, fitted on the dev split by `rag eval fit-router`.

    ``sufficiency`` says how likely the retrieved passages answer the question; ``draft`` how
    likely the small model's draft is right. Keep the draft at or above ``keep_threshold``
    (chosen for ``target_escalation`` on dev); abstain when sufficiency is below
    ``abstain_below`` and the draft is unsupported or declines; abstain before drafting when
    sufficiency is below ``skip_below``; otherwise escalate.
    """

    # Fitted on the 213 dev questions (`rag eval fit-router`, README); rag.yaml carries the same.
    sufficiency: LogisticParams = LogisticParams(
        bias=0.8589,
        weights={
            "coverage_idf": -0.100682,
            "coverage": 0.617515,
            "coverage_all": -0.350954,
            "unknown": -0.384209,
            "margin": -0.037373,
            "dense": -0.260253,
            "terms": 0.007348,
            "typed_gap": -0.622393,
            "sent_dense": 0.554255,
        },
        means={
            "coverage_idf": 0.663351,
            "coverage": 0.698956,
            "coverage_all": 0.773348,
            "unknown": 0.071657,
            "margin": 0.158372,
            "dense": 0.542983,
            "terms": 1.813761,
            "typed_gap": 0.075552,
            "sent_dense": 0.608849,
        },
        scales={
            "coverage_idf": 0.255126,
            "coverage": 0.228569,
            "coverage_all": 0.242552,
            "unknown": 0.174577,
            "margin": 0.179815,
            "dense": 0.119831,
            "terms": 0.367637,
            "typed_gap": 0.128722,
            "sent_dense": 0.128765,
        },
    )
    draft: LogisticParams = LogisticParams(
        bias=-1.026462,
        weights={
            "sufficiency": 1.38217,
            "coverage_idf": -0.660114,
            "support": 0.757945,
            "chars": -0.015994,
            "cited": -0.164042,
            "declines": 0.0,
            "declines_suff": 0.0,
            "marker_first": 0.0,
            "logprob_mean": 0.568235,
            "logprob_min": -0.088928,
            "title_share": 0.352335,
            "new_share": -0.121155,
            "number_missing": 0.0912,
            "cites_top": 0.119169,
            "answer_match": 0.648657,
        },
        means={
            "sufficiency": 0.680751,
            "coverage_idf": 0.663351,
            "support": 0.763097,
            "chars": 4.196156,
            "cited": 0.868545,
            "declines": 0.0,
            "declines_suff": 0.0,
            "marker_first": 0.0,
            "logprob_mean": -0.242249,
            "logprob_min": -1.143664,
            "title_share": 0.014224,
            "new_share": 0.463326,
            "number_missing": 0.051643,
            "cites_top": 0.633803,
            "answer_match": 0.43542,
        },
        scales={
            "sufficiency": 0.183859,
            "coverage_idf": 0.255126,
            "support": 0.210795,
            "chars": 0.504183,
            "cited": 0.337898,
            "declines": 1.0,
            "declines_suff": 1.0,
            "marker_first": 1.0,
            "logprob_mean": 0.182465,
            "logprob_min": 0.415506,
            "title_share": 0.046849,
            "new_share": 0.262085,
            "number_missing": 0.221306,
            "cites_top": 0.481764,
            "answer_match": 0.277876,
        },
    )
    keep_threshold: float = Field(0.216507, ge=0, le=1)
    abstain_below: float = Field(0.53, ge=0, le=1)
    skip_below: float = Field(0.2631, ge=0, le=1)
    target_escalation: float = Field(0.30, ge=0, le=1)
    # abstain, whatever the sufficiency, when less than this share of the draft's content words
    # (two or more) is in the passages (those it cites, or all when it cites none; its
    # ``support``): it answers from the model's own knowledge, and
    # the large model would too ("The capital of France is Paris"). Set by hand on dev, not
    # fitted: no answerable dev draft is below 0.33, four unanswerable ones are (0 = off).
    outside_below: float = Field(0.2, ge=0, le=1)


class EscalationConfig(_Model):
    """When the small model's draft is handed to the large model, and how."""

    mode: Mode = "auto"
    strategy: Strategy = "answer"
    policy: Literal["router", "signals"] = "router"
    router: RouterConfig = RouterConfig()
    min_draft_chars: int = Field(40, ge=0)
    # weak context: top score below this, per retriever (scores are not comparable)
    weak_context: PerRetriever = {
        "lexical": 0.2,
        "bm25": 4.54,
        "embedding": 0.51,
        "hybrid": 0.0,
    }
    # ambiguous context: top score minus the second below this, per retriever (0 = off)
    min_margin: PerRetriever = {"lexical": 0.0, "bm25": 0.0, "embedding": 0.0, "hybrid": 0.0}
    on_weak_context: Literal["abstain", "escalate"] = "abstain"
    min_support: float = Field(0.5, ge=0, le=1)
    marker_first: bool = True  # escalate drafts that start with "[n]" instead of an answer
    evasive_patterns: tuple[str, ...] = (
        r"\b(cannot|can't|can not|unable to) (answer|find|determine)",
        r"\bnot (mentioned|provided|specified|included|covered|stated)\b",
        r"\b(does not|doesn't|do not|don't) (contain|mention|provide|say|include|specify)",
        r"\bno (information|mention|details)\b",
        r"\bI don't know\b",
    )


class ChatConfig(_Model):
    max_message_chars: int = Field(8000, ge=10)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)


class Price(_Model):
    """Hypothetical price of one model per 1k prompt (in) and completion (out) tokens."""

    in_per_1k: float = Field(0.0, ge=0)
    out_per_1k: float = Field(0.0, ge=0)


class CostProfile(_Model):
    """A named price table for the small and the large model (the cost story, not a bill)."""

    slm: Price = Price()
    llm: Price = Price()
    currency: str = "USD"
    note: str = ""


DEFAULT_COST_PROFILES: dict[str, CostProfile] = {
    "local": CostProfile(
        note="embedded llama.cpp: no per-token price (hardware, power not counted)"
    ),
    "reference": CostProfile(
        slm=Price(in_per_1k=0.1, out_per_1k=0.2),
        llm=Price(in_per_1k=1.0, out_per_1k=2.0),
        currency="units",
        note="the large model costs 10x the small one per token (rag eval answers' reference)",
    ),
    "cloud": CostProfile(
        slm=Price(in_per_1k=0.00015, out_per_1k=0.0006),
        llm=Price(in_per_1k=0.0025, out_per_1k=0.01),
        note="hypothetical hosted small and large models (0.15/0.60 and 2.50/10 per 1M tokens)",
    ),
}


class CostsConfig(_Model):
    """Price profiles. ``profile: config`` keeps models.*.price_*_per_1k; a profile name overrides them."""

    profile: str = "config"
    volume_per_day: int = Field(1000, ge=0)  # questions per day, for the monthly figure
    days_per_month: int = Field(30, ge=1, le=31)
    profiles: dict[str, CostProfile] = DEFAULT_COST_PROFILES

    @model_validator(mode="after")
    def _known_profile(self) -> CostsConfig:
        if self.profile != "config" and self.profile not in self.profiles:
            raise ValueError(
                f"costs.profile {self.profile!r} is not defined; choose from "
                f"{', '.join(['config', *self.profiles])}"
            )
        return self


class Config(_Model):
    """The whole of rag.yaml."""

    data_dir: Path = Path(".rag")
    corpus: CorpusConfig = CorpusConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    context: ContextConfig = ContextConfig()
    models: ModelsConfig = ModelsConfig()
    escalation: EscalationConfig = EscalationConfig()
    chat: ChatConfig = ChatConfig()
    server: ServerConfig = ServerConfig()
    costs: CostsConfig = CostsConfig()


def _set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``, recursively for sections (unknown keys are kept for pydantic)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_validation(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        bad = e.get("input")
        shown = "" if isinstance(bad, dict) else f" (got {bad!r})"
        lines.append(f"  {loc}: {e['msg']}{shown}")
    return "\n".join(lines)


def load_config(
    path: Path | str | None = "rag.yaml", environ: Mapping[str, str] | None = None
) -> Config:
    """Load rag.yaml (if it exists) and apply RAG__SECTION__KEY overrides from ``environ``."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None and Path(path).exists():
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded
    elif path is not None and Path(path) != Path("rag.yaml"):
        raise ConfigError(f"config file {path} does not exist")
    raw = _merge(Config().model_dump(mode="json"), raw)
    overridden = False
    for name, value in sorted(env.items()):
        if name.startswith("RAG__"):
            keys = [k.lower() for k in name[5:].split("__") if k]
            if keys:
                _set_path(raw, keys, yaml.safe_load(value) if value else value)
                overridden = True
    if overridden:
        source = f"{source} + environment (RAG__…)"
    if env.get("MILVUS_URI"):
        _set_path(raw, ["retrieval", "milvus", "uri"], env["MILVUS_URI"])
    foundry = env.get("FOUNDRY_LOCAL_ENDPOINT")
    if foundry:
        url = foundry.rstrip("/")
        url = url if url.endswith("/v1") else url + "/v1"
        section = raw.get("models")
        models: dict[str, Any] = section if isinstance(section, dict) else {}
        for role in ("slm", "llm"):
            entry = models.get(role)
            m: dict[str, Any] = entry if isinstance(entry, dict) else {}
            if m.get("provider") == "foundry-local" and not m.get("base_url"):
                _set_path(raw, ["models", role, "base_url"], url)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from None
    return apply_cost_profile(cfg, cfg.costs.profile)


def apply_cost_profile(cfg: Config, name: str) -> Config:
    """The config with the models' prices taken from cost profile ``name`` ("config" keeps them)."""
    if name == "config":
        return cfg
    profile = cfg.costs.profiles.get(name)
    if profile is None:
        raise ConfigError(
            f"cost profile {name!r} is not defined; choose from "
            f"{', '.join(['config', *cfg.costs.profiles])} or add it under costs.profiles in rag.yaml"
        )
    models = cfg.models
    priced = {
        role: getattr(models, role).model_copy(
            update={
                "price_in_per_1k": getattr(profile, role).in_per_1k,
                "price_out_per_1k": getattr(profile, role).out_per_1k,
            }
        )
        for role in ("slm", "llm")
    }
    costs = cfg.costs.model_copy(update={"profile": name})
    return cfg.model_copy(update={"models": models.model_copy(update=priced), "costs": costs})


def base_url_for(model: ModelConfig, embedded: EmbeddedConfig, role: Literal["slm", "llm"]) -> str:
    """The OpenAI-compatible base URL a model is reached at."""
    if model.base_url:
        return model.base_url.rstrip("/")
    if model.provider == "embedded":
        port = embedded.slm_port if role == "slm" else embedded.llm_port
        return f"http://{embedded.host}:{port}/v1"
    if model.provider in PROVIDER_URLS:
        return PROVIDER_URLS[model.provider]
    raise ConfigError(
        f"models.{role}.base_url is required for provider {model.provider!r} "
        "(e.g. http://localhost:8000/v1)"
    )
