"""The latency breakdown, answer log-probability stats and the embedded server's tuning flags."""

from __future__ import annotations

import pytest

from rag.config import load_config
from rag.errors import ConfigError
from rag.latency import (
    NOT_REPORTED,
    breakdown_markdown,
    breakdown_rows,
    first_token_ms,
    latency_json,
    other_ms,
)
from rag.logprobs import answer_logprob_stats
from rag.models.base import CallRecord
from rag.models.embedded import ServerSpec, embedded_specs, server_tuning_args
from rag.models.llama_cpp_server import _Trace, timings_chunk
from rag.types import Metrics, Usage


def _usage(**kw: object) -> Usage:
    base: dict[str, object] = {
        "model": "small",
        "ttft_ms": 900.0,
        "total_ms": 2400.0,
        "prompt_tokens": 1200,
        "completion_tokens": 31,
        "tokens_estimated": False,
    }
    base.update(kw)
    return Usage(**base)  # type: ignore[arg-type]


def _metrics(*stages: tuple[str, Usage]) -> Metrics:
    return Metrics(
        retriever="hybrid",
        models=tuple(u.model for _, u in stages),
        prep_ms=2.0,
        retrieval_ms=30.0,
        total_ms=3000.0,
        stages=stages,
        escalated=False,
        reason="",
        cost=0.0,
        packing_ms=1.5,
    )


SERVER = _usage(
    queue_ms=100.0, prompt_ms=750.0, prompt_eval_tokens=1000, cached_tokens=200, decode_ms=1500.0
)


def test_server_reported_split_is_shown_with_speeds() -> None:
    rows = {
        step: (time, detail) for step, time, detail in breakdown_rows(_metrics(("draft", SERVER)))
    }

    assert rows["draft (small): queue wait"][0] == "100 ms"
    time, detail = rows["draft (small): prompt reading"]
    assert time == "750 ms"
    # 1000 tokens read in 0.75 s; 200 came from the cache
    assert detail == "1,000 of 1,200 tokens read, 200 cached · 1,333 tokens/s"
    assert rows["draft (small): decoding"] == ("1,500 ms", "31 tokens · 20.0 tokens/s")
    assert rows["context packing"][0] == "1.5 ms"
    assert rows["end to end"][0] == "3,000 ms"
    assert rows["first answer token"][0] == "934 ms"  # 2 + 30 + 1.5 + 900


def test_client_only_provider_says_not_reported_instead_of_guessing() -> None:
    rows = {
        step: (time, detail) for step, time, detail in breakdown_rows(_metrics(("draft", _usage())))
    }

    assert rows["draft (small): queue wait"] == (NOT_REPORTED, "inside first token")
    assert rows["draft (small): prompt reading"][0] == NOT_REPORTED
    # decoding falls back to the client's clock and says so
    assert rows["draft (small): decoding"] == (
        "1,500 ms",
        "31 tokens · 20.0 tokens/s (client clock)",
    )


def test_latency_json_has_every_part_and_adds_up() -> None:
    m = _metrics(("draft", SERVER), ("answer", _usage(model="large", total_ms=400.0)))
    out = latency_json(m)

    assert {
        "prep_ms",
        "retrieval_ms",
        "packing_ms",
        "first_token_ms",
        "other_ms",
        "total_ms",
    } <= set(out)
    draft = out["stages"]["draft"]
    assert (draft["queue_ms"], draft["prompt_ms"], draft["decode_ms"]) == (100.0, 750.0, 1500.0)
    assert (draft["prompt_eval_tokens"], draft["cached_tokens"]) == (1000, 200)
    assert draft["server_timings"] is True and draft["prompt_tokens_per_s"] == 1333.3
    assert out["stages"]["answer"]["queue_ms"] is None
    assert out["stages"]["answer"]["server_timings"] is False
    assert other_ms(m) == pytest.approx(3000 - 33.5 - 2400 - 400)
    assert first_token_ms(m) == pytest.approx(933.5)
    assert breakdown_markdown(m).count("\n") == len(breakdown_rows(m)) + 1


def test_no_model_call_means_no_first_token() -> None:
    m = _metrics()
    assert first_token_ms(m) is None
    assert latency_json(m)["first_token_ms"] is None
    assert breakdown_rows(m)[-1][0] == "end to end"


def test_decode_speed_prefers_the_server_clock() -> None:
    assert SERVER.tokens_per_s == pytest.approx(30 / 1.5)
    assert _usage().tokens_per_s == pytest.approx(30 / 1.5)  # (2400 - 900) ms on the client
    assert _usage(decode_ms=3000.0).tokens_per_s == pytest.approx(10.0)
    assert _usage().prompt_tokens_per_s is None


# -- log-probabilities ----------------------------------------------------------------------


def test_citation_marker_tokens_are_left_out() -> None:
    tokens = [("Up", -0.5), (" to", -0.1), (" 45", -1.5), (" euros", -0.2), (" [", -0.01),
              ("1", -0.001), ("].", -0.02)]  # fmt: skip
    mean, low = answer_logprob_stats(tokens)
    assert mean == pytest.approx((-0.5 - 0.1 - 1.5 - 0.2) / 4)
    assert low == -1.5


def test_markers_with_several_numbers_and_inside_a_token() -> None:
    tokens = [("Yes", -0.3), (" [1, 2]", -0.0), (" and", -0.4), ("[3]", 0.0)]
    assert answer_logprob_stats(tokens) == (pytest.approx(-0.35), -0.4)


def test_nothing_returned_is_unknown_not_confident() -> None:
    assert answer_logprob_stats(None) == (None, None)
    assert answer_logprob_stats([]) == (None, None)
    assert answer_logprob_stats([("[1]", -0.1)]) == (None, None)  # only a marker
    assert answer_logprob_stats([("x", float("nan"))]) == (None, None)
    record = CallRecord(model="m", text="hi")
    assert (record.usage().logprob_mean, record.usage().logprob_min) == (None, None)


def test_call_record_carries_the_stats_into_usage() -> None:
    record = CallRecord(model="m", text="A [1]", logprobs=[("A", -2.0), (" [1]", -0.1)])
    u = record.usage()
    assert (u.logprob_mean, u.logprob_min) == (-2.0, -2.0)


# -- the embedded servers' settings ---------------------------------------------------------


def test_tuning_flags_reach_the_server_command_line() -> None:
    from pathlib import Path

    plain = ServerSpec("slm", "a", Path("m.gguf"), 1, 512, 1)
    assert server_tuning_args(plain) == ["--logits_all", "True"]
    tuned = ServerSpec("llm", "a", Path("m.gguf"), 1, 512, 1, logits_all=False, prompt_lookup=8,
                       prompt_cache=True)  # fmt: skip
    assert server_tuning_args(tuned) == [
        "--logits_all", "False", "--draft_model", "prompt-lookup-decoding",
        "--draft_model_num_pred_tokens", "8", "--cache", "True",
    ]  # fmt: skip


def test_logits_all_per_role_follows_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    import rag.models.embedded as embedded

    monkeypatch.setattr(embedded, "gguf_path", lambda name, data_dir: Path(f"{name}.gguf"))
    specs = {s.role: s for s in embedded_specs(load_config(None, environ={}))}
    assert specs["slm"].logits_all is True and specs["llm"].logits_all is False
    assert specs["slm"].prompt_lookup == specs["llm"].prompt_lookup == 0


def test_logprobs_without_logits_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"models\.slm\.logprobs.*slm_logits_all: true"):
        load_config(None, environ={"RAG__MODELS__EMBEDDED__SLM_LOGITS_ALL": "false"})
    cfg = load_config(
        None,
        environ={
            "RAG__MODELS__EMBEDDED__SLM_LOGITS_ALL": "false",
            "RAG__MODELS__SLM__LOGPROBS": "false",
        },
    )
    assert cfg.models.slm.logprobs is False


def test_timings_chunk_splits_queue_prompt_and_decode() -> None:
    trace = _Trace(arrived=10.0, started=10.25, prompt_total=1200, cached=200, generated=31,
                   first=11.25, last=12.75)  # fmt: skip
    chunk = timings_chunk(trace, 12.8, {"id": "c1", "created": 5, "model": "m"})
    t = chunk["timings"]
    assert chunk["choices"] == [] and chunk["id"] == "c1"
    assert chunk["usage"] == {"prompt_tokens": 1200, "completion_tokens": 31, "total_tokens": 1231}
    assert (t["queue_ms"], t["prompt_ms"], t["predicted_ms"]) == (250.0, 1000.0, 1500.0)
    assert (t["prompt_n"], t["cache_n"], t["predicted_n"]) == (1000, 200, 31)
    assert t["prompt_per_second"] == 1000.0 and t["predicted_per_second"] == 20.0


def test_top_sorted_keeps_the_first_k_of_a_full_sort() -> None:
    from rag.models.llama_cpp_server import _Running, top_sorted

    pairs = [(-1.0, 0), (-0.5, 1), (-3.0, 2), (-0.5, 3), (-2.0, 4)]
    full = sorted(pairs, reverse=True)
    try:
        for k in (0, 1, 3, 5):
            _Running.top_k = k
            assert top_sorted(iter(pairs), reverse=True) == full[:k]
        assert top_sorted(pairs) == sorted(pairs)  # not the logprobs call: a plain sort
    finally:
        _Running.top_k = None
    assert top_sorted(pairs, reverse=True) == full  # outside a request: untouched
