"""retrieve → draft → decide → answer, yielding typed events. Knows nothing of any UI."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from rag.citations import attach_citations, check_citations
from rag.compress import Similarity, compress
from rag.config import Config, EscalationConfig, Mode, ModelConfig, Strategy
from rag.errors import ConfigError, InputError, ModelError, RagError, RetrieverUnavailable
from rag.escalation import POLICIES, EscalationPolicy, SignalPolicy
from rag.index import IndexManager, IndexStatus, Progress
from rag.models import CallRecord, ChatModel, Message, make_chat_model
from rag.models.openai_compat import estimate_tokens
from rag.prompts import (
    answer_messages,
    pack_context,
    refine_messages,
    retrieval_only_answer,
)
from rag.retrieval.base import HasDenseSide, HasEncoder, HasSparseSide
from rag.retrieval.encoder import VectorCache
from rag.sufficiency import features as sufficiency_features
from rag.sufficiency import predict
from rag.termstats import TermStats, stats_for, terms
from rag.types import (
    ContextPacked,
    Decision,
    Done,
    Escalated,
    Event,
    Failed,
    Hit,
    Metrics,
    Notice,
    Retrieved,
    StageFinished,
    StageStarted,
    Sufficiency,
    Token,
    Usage,
)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2060\ufeff]")
FALLBACK_ORDER = ("bm25", "lexical")


@dataclass(frozen=True)
class AskOptions:
    """Per-question overrides of rag.yaml (chat settings, CLI flags)."""

    retriever: str | None = None
    top_k: int | None = None
    mode: Mode | None = None
    strategy: Strategy | None = None
    temperature: float | None = None
    seed: int | None = None
    min_draft_chars: int | None = None  # overrides escalation.min_draft_chars
    weak_context: float | None = None  # overrides escalation.weak_context for the retriever used
    keep_threshold: float | None = None  # overrides escalation.router.keep_threshold


@dataclass
class _Call:
    """The outcome of one model stage."""

    record: CallRecord
    error: ModelError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def cut(self) -> bool:
        return self.error is not None and bool(self.record.text)


@dataclass
class _Run:
    stages: list[tuple[str, Usage]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    escalated: bool = False
    reason: str = ""


def cost_of(usage: Usage, mcfg: ModelConfig) -> float:
    """Cost of one call under the price table in rag.yaml."""
    return (
        usage.prompt_tokens * mcfg.price_in_per_1k + usage.completion_tokens * mcfg.price_out_per_1k
    ) / 1000.0


class Assistant:
    """Answers questions about the corpus with the configured retrievers, models and policy."""

    def __init__(
        self,
        cfg: Config,
        index: IndexManager,
        slm: ChatModel,
        llm: ChatModel,
        policy: EscalationPolicy,
    ) -> None:
        self.cfg = cfg
        self.index = index
        self.slm = slm
        self.llm = llm
        self.policy = policy
        self._signals = SignalPolicy(cfg.escalation)
        self._sentence_vectors: VectorCache | None = None

    # ---- input ----

    def check_question(self, question: str) -> str:
        """Clean a user message or raise InputError saying what is wrong."""
        text = _CONTROL.sub("", question).strip()
        limit = self.cfg.chat.max_message_chars
        if len(question) > limit:
            raise InputError(
                f"Your message is {len(question):,} characters long; the limit is {limit:,} "
                "(chat.max_message_chars). Ask a shorter question or paste only the relevant part."
            )
        if not text:
            raise InputError("The message is empty. Type a question about the documents.")
        return text

    # ---- retrieval ----

    def prepare(self, name: str) -> IndexStatus:
        """Open ``name``'s index and run one throwaway question through retrieval and the
        sufficiency score, so the first user question finds the query encoder's session, the
        term statistics and the sparse side ready (the first search took 170 ms here against
        4 ms for the next ones). Raises RagError when the index cannot be opened."""
        _, status = self.index.open(name)
        question = "How do I get started?"
        try:
            used, hits, _ms, _notes = self.retrieve(question, name, self.cfg.retrieval.top_k)
            self.assess(question, used, hits, self._term_stats(used))
            self._context_signal(used, question, hits)
        except (RagError, ValueError):
            pass  # the first real question reports what fails; opening the index worked
        return status

    def retrieve(self, question: str, name: str, k: int) -> tuple[str, list[Hit], float, list[str]]:
        """Search with ``name``; if it cannot run, fall back to bm25 then lexical, saying why."""
        notes: list[str] = []
        for candidate in (name, *[n for n in FALLBACK_ORDER if n != name]):
            try:
                retriever = self.index.get(candidate)
                t = time.perf_counter()
                hits = retriever.search(question, k)
                return candidate, hits, (time.perf_counter() - t) * 1000, notes
            except RetrieverUnavailable as exc:
                notes.append(f"The {candidate} retriever is unavailable: {exc}")
        raise RetrieverUnavailable("no retriever could run; see the notes above")

    # ---- models ----

    async def _stage(
        self,
        model: ChatModel,
        stage: str,
        messages: Sequence[Message],
        opts: AskOptions,
        out: list[_Call],
        run: _Run,
    ) -> AsyncIterator[Event]:
        record = CallRecord(model=model.name)
        call = _Call(record)
        out.append(call)
        yield StageStarted(stage, model.name)  # type: ignore[arg-type]
        try:
            async for piece in model.stream(
                messages, record, temperature=opts.temperature, seed=opts.seed
            ):
                yield Token(piece, stage, model.name)  # type: ignore[arg-type]
        except ModelError as exc:
            call.error = exc
        usage = record.usage()
        if record.text:
            run.stages.append((stage, usage))
            run.models.append(model.name)
        yield StageFinished(stage, usage, record.text, incomplete=not call.ok)  # type: ignore[arg-type]

    # ---- the pipeline ----

    async def ask(self, question: str, opts: AskOptions | None = None) -> AsyncIterator[Event]:
        """Answer one question, yielding events as they happen. Never raises for model faults."""
        opts = opts or AskOptions()
        t0 = time.perf_counter()
        try:
            q = self.check_question(question)
        except InputError as exc:
            yield Failed(str(exc), "bad_input")
            return
        name = opts.retriever or self.cfg.retrieval.retriever
        k = self.cfg.retrieval.top_k if opts.top_k is None else opts.top_k
        mode = opts.mode or self.cfg.escalation.mode
        strategy = opts.strategy or self.cfg.escalation.strategy

        try:
            used, hits, retrieval_ms, notes = self.retrieve(q, name, k)
        except (RagError, ValueError) as exc:
            yield Failed(f"Retrieval failed: {exc}. The models were not asked.", "retrieval")
            return
        for note in notes:
            yield Notice(f"{note} Used {used} instead.", "warning")
        stats = self._term_stats(used)
        sufficiency = self.assess(q, used, hits, stats)
        yield Retrieved(used, tuple(hits), retrieval_ms, sufficiency)

        m = self.cfg.models
        t_pack = time.perf_counter()
        prompt_hits: Sequence[Hit] = hits
        before_tokens = after_tokens = 0
        if self.cfg.context.compress and hits:
            squeezed = compress(q, hits, stats, self.cfg.context, self._similarity(used))
            prompt_hits = squeezed.hits
            before_tokens, after_tokens = squeezed.tokens_before, squeezed.tokens_after
        packed = pack_context(
            prompt_hits,
            q,
            min(m.slm.context_window, m.llm.context_window),
            max(m.slm.max_tokens, m.llm.max_tokens),
        )
        sources = packed.sources
        packing_ms = (time.perf_counter() - t_pack) * 1000
        if not before_tokens:
            before_tokens = after_tokens = sum(estimate_tokens(s.chunk.text) for s in sources)
        yield ContextPacked(
            sources, packed.dropped, packed.prompt_tokens, before_tokens, after_tokens
        )
        if packed.dropped or packed.truncated:
            cut = (
                f"{packed.dropped} of {len(prompt_hits)} passages were left out"
                if packed.dropped
                else ""
            )
            trunc = "the top passage was shortened" if packed.truncated else ""
            yield Notice(
                "Context was cut to fit the model's window: "
                + "; ".join(p for p in (cut, trunc) if p)
                + ".",
                "warning",
            )
        prep_ms = (time.perf_counter() - t0) * 1000 - retrieval_ms - packing_ms

        signal_name, signal_hits = self._context_signal(used, q, hits)
        policy = self._policy_for(opts, signal_name)
        run = _Run()
        calls: list[_Call] = []
        final: str | None = None
        final_model = ""
        abstained = False
        signals: dict[str, object] = {}
        incomplete = False

        async def answer_with(
            model: ChatModel, stage: str, msgs: list[Message]
        ) -> AsyncIterator[Event]:
            async for ev in self._stage(model, stage, msgs, opts, calls, run):
                yield ev

        draft_msgs = answer_messages(q, sources, draft=True)
        full_msgs = answer_messages(q, sources, draft=False)

        if mode == "compare":
            async for ev in answer_with(self.slm, "compare", draft_msgs):
                yield ev
            small = calls[-1]
            async for ev in answer_with(self.llm, "compare", full_msgs):
                yield ev
            large = calls[-1]
            for c, label in ((small, "small"), (large, "large")):
                if c.error:
                    yield Notice(f"The {label} model failed: {c.error}", "warning")
            best = large if large.record.text else small
            final, final_model = (best.record.text or None), best.record.model
            incomplete = not best.ok
            run.reason = "compare: both models answered the same question"
        else:
            draft: _Call | None = None
            decision: Decision | None = None
            small_only_failed = False
            if mode == "auto":
                decision = policy.before_draft(signal_name, signal_hits, sufficiency=sufficiency)
                run.reason = decision.reason
                signals = dict(decision.signals)  # the draft's, when there is one, replace these
                if decision.abstain:
                    abstained = True
                    final, final_model = self._abstain_text(decision), "policy"
            if final is None and mode in ("auto", "never") and not (decision and decision.escalate):
                async for ev in answer_with(self.slm, "draft", draft_msgs):
                    yield ev
                draft = calls[-1]
                if draft.ok:
                    # The small model is not asked to cite; the app attributes its sentences.
                    draft.record.text = attach_citations(draft.record.text, sources)
                    # In "never" mode too: the router's view of every draft is what it is fitted on.
                    judged = policy.after_draft(
                        used,
                        sources,
                        draft.record.text,
                        sufficiency=sufficiency,
                        usage=draft.record.usage(),
                        question=q,
                        weights=stats.weights(terms(q)),
                    )
                    signals = dict(judged.signals)
                if draft.ok and mode == "never":
                    final, final_model = draft.record.text, self.slm.name
                elif draft.ok:
                    decision = judged
                    run.reason = decision.reason
                    if decision.abstain:
                        abstained = True
                        final, final_model = self._abstain_text(decision), "policy"
                    elif not decision.escalate:
                        final, final_model = draft.record.text, self.slm.name
                elif draft.cut and mode == "never":
                    final, final_model, incomplete = draft.record.text, self.slm.name, True
                    yield Notice(
                        f"{draft.error} — the answer is incomplete; ask again to retry.", "warning"
                    )
                elif mode == "never":  # small model only: the user chose not to use the large one
                    yield Notice(
                        f"The small model is unavailable ({draft.error}); the large model is off "
                        "in this mode, so here are the most relevant passages.",
                        "warning",
                    )
                    small_only_failed = True
                else:
                    yield Notice(
                        f"The small model is unavailable ({draft.error}); the large model answers instead.",
                        "warning",
                    )
                    decision = Decision(
                        True, "after", f"escalated: the small model failed ({draft.error})"
                    )
                    run.reason = decision.reason
            if final is None and not small_only_failed:
                if mode == "auto" and decision is not None:
                    run.escalated = True
                    yield Escalated(decision)
                use_refine = strategy == "refine" and draft is not None and draft.ok
                msgs = (
                    refine_messages(q, sources, draft.record.text)
                    if use_refine and draft
                    else full_msgs
                )
                stage = "refine" if use_refine else "answer"
                # The answer the policy will judge streams through its gate: a number or an
                # address the check would reject is held back and never shows (NumberGate).
                checked = mode == "auto" and decision is not None
                gate = policy.answer_gate(q, sources) if checked else None
                async for ev in answer_with(self.llm, stage, msgs):
                    if gate is not None and isinstance(ev, Token):
                        shown = gate.feed(ev.text)
                        if shown:
                            yield Token(shown, ev.stage, ev.model)
                        continue
                    yield ev
                big = calls[-1]
                if big.ok:
                    final, final_model = big.record.text, self.llm.name
                    if mode == "auto" and decision is not None:
                        # The policy may judge the answer too (weak context, made-up numbers).
                        after = policy.after_answer(
                            signal_name,
                            signal_hits,
                            big.record.text,
                            sufficiency=sufficiency,
                            question=q,
                            passages=sources,
                        )
                        signals.update({f"answer_{k}": v for k, v in after.signals.items()})
                        if after.abstain:
                            abstained = True
                            run.reason += "; " + after.reason
                            final, final_model = self._abstain_text(after), "policy"
                    if gate is not None and not abstained and (held := gate.rest()):
                        yield Token(held, stage, self.llm.name)  # type: ignore[arg-type]
                elif big.cut:
                    final, final_model, incomplete = big.record.text, self.llm.name, True
                    if gate is not None and (held := gate.rest()):
                        yield Token(held, stage, self.llm.name)  # type: ignore[arg-type]
                    yield Notice(
                        f"{big.error} — the answer is incomplete; ask again to retry.", "warning"
                    )
                elif draft is not None and draft.record.text:
                    final, final_model = draft.record.text, self.slm.name
                    incomplete = not draft.ok
                    yield Notice(
                        f"The large model is unavailable ({big.error}); showing the small model's draft.",
                        "warning",
                    )
                elif mode == "always" or draft is None:
                    yield Notice(
                        f"The large model is unavailable ({big.error}); the small model answers instead.",
                        "warning",
                    )
                    if draft is None:
                        async for ev in answer_with(self.slm, "draft", draft_msgs):
                            yield ev
                        draft = calls[-1]
                    if draft.record.text:
                        final, final_model, incomplete = (
                            draft.record.text,
                            self.slm.name,
                            not draft.ok,
                        )

        if final is None:
            errors = "; ".join(str(c.error) for c in calls if c.error)
            yield Notice(f"No model could answer ({errors}).", "warning")
            final, final_model = retrieval_only_answer(sources), "retrieval-only"

        total_ms = (time.perf_counter() - t0) * 1000
        cost = sum(cost_of(u, m.slm if u.model == self.slm.name else m.llm) for _, u in run.stages)
        metrics = Metrics(
            retriever=used,
            models=tuple(dict.fromkeys(run.models)),
            prep_ms=prep_ms,
            retrieval_ms=retrieval_ms,
            total_ms=total_ms,
            stages=tuple(run.stages),
            escalated=run.escalated,
            reason=run.reason,
            cost=cost,
            incomplete=incomplete,
            sufficiency=sufficiency.probability if sufficiency else None,
            signals=signals,
            packing_ms=packing_ms,
        )
        if not abstained and final_model not in ("policy", "retrieval-only"):
            # A model that says the sources do not answer has declined: the app did not answer.
            abstained = self.declines(final)
            if not abstained and not incomplete:  # a cut answer is shown as it arrived
                final = attach_citations(final, sources)
        citations = () if abstained else check_citations(final, sources)
        yield Done(final, final_model, sources, citations, metrics, abstained)

    def _term_stats(self, name: str) -> TermStats:
        """IDF over the chunks of the index in use, recomputed when that chunk list changes."""
        return stats_for(self.index.chunks(name))

    def assess(
        self, question: str, name: str, hits: Sequence[Hit], stats: TermStats
    ) -> Sufficiency:
        """The context-sufficiency features and probability (same model for every retriever)."""
        dense = self._dense_top(name, question, hits)
        feats = sufficiency_features(question, hits, stats, dense, self._cosines(name))
        params = self.cfg.escalation.router.sufficiency
        return Sufficiency(feats, predict(feats, params) if params.weights else None)

    def _similarity(self, name: str) -> Similarity | None:
        """Sentence scoring in the compression, unless its dense weight is off."""
        return self._cosines(name) if self.cfg.context.dense_weight else None

    def _cosines(self, name: str) -> Similarity | None:
        """Question-to-sentence cosines, when the retriever in use has an embedding model loaded."""
        if name not in ("embedding", "hybrid"):
            return None
        found = self.index.get(name)
        side = found.dense if isinstance(found, HasDenseSide) else found
        if not isinstance(side, HasEncoder):
            return None
        # The same passages come back for related questions: their sentences are encoded once.
        if self._sentence_vectors is None or self._sentence_vectors.encoder is not side.encoder:
            self._sentence_vectors = VectorCache(side.encoder)
        return self._sentence_vectors.cosines

    def _dense_top(self, name: str, question: str, hits: Sequence[Hit]) -> float | None:
        """The best cosine of the question to any passage, when an embedding index is in use."""
        if name == "embedding":
            return hits[0].score if hits else None
        fused = self.index.get(name) if name == "hybrid" else None
        dense = fused.dense if isinstance(fused, HasDenseSide) else None
        if dense is None:
            return None
        top = dense.search(question, 1)
        return float(top[0].score) if top else None

    def declines(self, answer: str) -> bool:
        """True when the answer says the documents do not answer (evasive patterns)."""
        return self._signals.evasive_match(answer) is not None

    def _context_signal(self, name: str, question: str, hits: list[Hit]) -> tuple[str, list[Hit]]:
        """The scores the weak-context signal reads.

        Min-max fusion puts hybrid's best hit at ~1.0 for every query, so its scores say nothing
        about how well the corpus covers a question; hybrid is judged on its bm25 side instead
        (one extra sparse search, ~1 ms).
        """
        fused = self.index.get(name) if name == "hybrid" else None
        sparse = fused.sparse if isinstance(fused, HasSparseSide) else None
        if sparse is None:
            return name, hits
        return sparse.name, list(sparse.search(question, 2))

    def _policy_for(self, opts: AskOptions, retriever: str) -> EscalationPolicy:
        """The configured policy, or one with this session's thresholds."""
        if (
            opts.min_draft_chars is None
            and opts.weak_context is None
            and opts.keep_threshold is None
        ):
            return self.policy
        esc = self.cfg.escalation
        update: dict[str, object] = {}
        if opts.keep_threshold is not None:
            update["router"] = esc.router.model_copy(update={"keep_threshold": opts.keep_threshold})
        if opts.min_draft_chars is not None:
            update["min_draft_chars"] = opts.min_draft_chars
        if opts.weak_context is not None:
            weak: dict[str, float] = {k: v for k, v in esc.weak_context.items()}
            weak[retriever] = opts.weak_context  # validated below: a name must be a retriever
            update["weak_context"] = weak
        # Validated like rag.yaml (model_copy would not): a bad override fails here, by name.
        try:
            merged = EscalationConfig.model_validate({**esc.model_dump(), **update})
        except ValidationError as exc:
            raise ConfigError(f"invalid escalation override {update}: {exc}") from None
        return POLICIES[esc.policy](merged)

    def _abstain_text(self, decision: Decision) -> str:
        return (
            "The documents do not seem to cover this question, so I won't guess. "
            f"({decision.reason}.) Try rephrasing, or check the passages listed under Retrieve."
        )


def build_assistant(cfg: Config, progress: Progress | None = None) -> Assistant:
    """Wire the index, the two models and the escalation policy from the configuration."""
    index = IndexManager(cfg, progress)
    policy = POLICIES[cfg.escalation.policy](cfg.escalation)
    return Assistant(cfg, index, make_chat_model(cfg, "slm"), make_chat_model(cfg, "llm"), policy)
