"""Where the time of one answer went: pure functions over Metrics, for the CLI, eval and chat.

Stages come from the model calls (draft, answer, refine, compare). Queue wait, prompt reading
and decoding are the server's own figures when it reports them (the embedded servers do, see
rag.models.llama_cpp_server; so does llama.cpp's own server, without queue wait); other
providers only give the client's clock, and the breakdown says "not reported" instead of
guessing.
"""

from __future__ import annotations

from typing import Any

from rag.types import Metrics, Usage

NOT_REPORTED = "not reported"


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def stage_json(usage: Usage) -> dict[str, Any]:
    """One model call: the client's timings plus the server's split where reported."""
    pps = usage.prompt_tokens_per_s
    return {
        "model": usage.model,
        "ttft_ms": round(usage.ttft_ms, 1),
        "total_ms": round(usage.total_ms, 1),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "tokens_per_s": round(usage.tokens_per_s, 1),
        "tokens_estimated": usage.tokens_estimated,
        "sent_ms": round(usage.sent_ms, 1),
        "queue_ms": _r(usage.queue_ms),
        "prompt_ms": _r(usage.prompt_ms),
        "prompt_eval_tokens": usage.prompt_eval_tokens,
        "cached_tokens": usage.cached_tokens,
        "prompt_tokens_per_s": _r(pps),
        "decode_ms": _r(usage.decode_ms),
        "server_timings": usage.prompt_ms is not None,
        "logprob_mean": _r(usage.logprob_mean, 4),
        "logprob_min": _r(usage.logprob_min, 4),
    }


def before_model_ms(m: Metrics) -> float:
    """Time spent before the first model call: prep, retrieval and packing."""
    return m.prep_ms + m.retrieval_ms + m.packing_ms


def first_token_ms(m: Metrics, stage: str | None = None) -> float | None:
    """From the question to the first token of the first model call (of ``stage`` when given,
    which must then be the first call, as a draft is); None without such a call."""
    calls = [u for name, u in m.stages if stage is None or name == stage]
    if not calls:
        return None
    return before_model_ms(m) + calls[0].ttft_ms


def other_ms(m: Metrics) -> float:
    """End to end minus the measured parts: decisions between stages, event handling."""
    return max(m.total_ms - before_model_ms(m) - sum(u.total_ms for _, u in m.stages), 0.0)


def latency_json(m: Metrics) -> dict[str, Any]:
    """The breakdown as a JSON-ready dict (``rag ask --json`` "timings", eval details)."""
    return {
        "prep_ms": round(m.prep_ms, 2),
        "retrieval_ms": round(m.retrieval_ms, 2),
        "packing_ms": round(m.packing_ms, 2),
        "ttft_ms": _r(m.stages[0][1].ttft_ms) if m.stages else None,
        "first_token_ms": _r(first_token_ms(m)),
        "other_ms": round(other_ms(m), 1),
        "total_ms": round(m.total_ms, 1),
        "stages": {stage: stage_json(u) for stage, u in m.stages},
    }


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _stage_rows(stage: str, u: Usage) -> list[tuple[str, str, str]]:
    who = f"{stage} ({u.model})"
    est = " (estimated)" if u.tokens_estimated else ""
    rows = [(f"{who}: request sent", _ms(u.sent_ms), "until the server answered the request")]
    if u.queue_ms is not None:
        rows.append((f"{who}: queue wait", _ms(u.queue_ms), "behind other requests"))
    else:
        rows.append((f"{who}: queue wait", NOT_REPORTED, "inside first token"))
    if u.prompt_ms is not None:
        read = u.prompt_eval_tokens if u.prompt_eval_tokens is not None else u.prompt_tokens
        cached = f", {u.cached_tokens:,} cached" if u.cached_tokens else ""
        pps = u.prompt_tokens_per_s
        speed = f" · {pps:,.0f} tokens/s" if pps else ""
        rows.append(
            (
                f"{who}: prompt reading",
                _ms(u.prompt_ms),
                f"{read:,} of {u.prompt_tokens:,} tokens read{cached}{speed}",
            )
        )
    else:
        rows.append(
            (
                f"{who}: prompt reading",
                NOT_REPORTED,
                f"{u.prompt_tokens:,} prompt tokens{est}; inside first token",
            )
        )
    rows.append((f"{who}: first token", _ms(u.ttft_ms), "from sending the request"))
    decode = u.decode_ms if u.decode_ms is not None else max(u.total_ms - u.ttft_ms, 0.0)
    clock = "" if u.decode_ms is not None else " (client clock)"
    rows.append(
        (
            f"{who}: decoding",
            _ms(decode),
            f"{u.completion_tokens:,} tokens{est} · {u.tokens_per_s:.1f} tokens/s{clock}",
        )
    )
    rows.append((f"{who}: whole call", _ms(u.total_ms), ""))
    return rows


def breakdown_rows(m: Metrics) -> list[tuple[str, str, str]]:
    """(step, time, detail) rows, in the order the time was spent, ending with end to end."""
    rows = [
        ("prep", _ms(m.prep_ms), "checking the question, choosing the policy"),
        ("retrieval", _ms(m.retrieval_ms), m.retriever),
        ("context packing", _ms(m.packing_ms), "choosing and formatting passages"),
    ]
    for stage, usage in m.stages:
        rows.extend(_stage_rows(stage, usage))
    rows.append(("other", _ms(other_ms(m)), "decisions between stages, streaming"))
    first = first_token_ms(m)
    if first is not None:
        rows.append(("first answer token", _ms(first), "from the question"))
    rows.append(("end to end", _ms(m.total_ms), ""))
    return rows


def breakdown_markdown(m: Metrics) -> str:
    """The rows as a Markdown table (the chat's expandable step)."""
    lines = ["| step | time | detail |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in breakdown_rows(m)]
    return "\n".join(lines)
