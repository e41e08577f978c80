"""The fake OpenAI server speaks the protocol the real `openai` clients expect."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from rag.measure.fake_openai import (
    GENERIC_REPLY,
    NOT_FOUND_REPLY,
    FakeOpenAI,
    Fault,
    closed_port_url,
    echo_context,
    tokenize,
)
from tests.conftest import NetworkBlockedError, NetworkGuard, screenshot_path

pytest_plugins = ("pytester",)

MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]


def client(fake: FakeOpenAI, **kwargs: Any) -> OpenAI:
    options: dict[str, Any] = {"api_key": "test-key", "max_retries": 0, "timeout": 5.0}
    return OpenAI(base_url=fake.base_url, **(options | kwargs))


def stream_text(fake: FakeOpenAI, model: str = "small", **kwargs: Any) -> str:
    chunks = client(fake).chat.completions.create(
        model=model, messages=MESSAGES, stream=True, **kwargs
    )
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def raw_stream(fake: FakeOpenAI, body: dict[str, Any]) -> list[str]:
    """The `data:` payloads of a streamed response, read without the openai client."""
    with httpx.stream("POST", f"{fake.base_url}/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


# -- streaming and plain completions ------------------------------------------------------


def test_stream_assembles_scripted_reply_with_async_client(fake_openai: FakeOpenAI) -> None:
    reply = "Paris is the capital of France [1].\n\nIt sits on the Seine [2]."
    fake_openai.script("small", [reply])

    async def run() -> tuple[list[str], list[str | None]]:
        async with AsyncOpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=0) as ai:
            stream = await ai.chat.completions.create(model="small", messages=MESSAGES, stream=True)
            pieces: list[str] = []
            finishes: list[str | None] = []
            async for chunk in stream:
                assert chunk.object == "chat.completion.chunk"
                assert chunk.model == "small"
                pieces.append(chunk.choices[0].delta.content or "")
                finishes.append(chunk.choices[0].finish_reason)
            return pieces, finishes

    pieces, finishes = asyncio.run(run())
    assert "".join(pieces) == reply
    assert pieces[0] == ""  # the role chunk, as OpenAI sends it
    assert pieces[1:-1] == tokenize(reply)
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}


def test_wire_format_matches_openai(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", ["Hi there"])
    events = raw_stream(
        fake_openai,
        {"model": "small", "messages": MESSAGES, "stream": True},
    )
    assert events[-1] == "[DONE]"
    first = json.loads(events[0])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["id"].startswith("chatcmpl-") and isinstance(first["created"], int)
    assert [json.loads(e)["choices"][0]["delta"].get("content") for e in events[1:3]] == [
        "Hi ",
        "there",
    ]
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"


def test_non_stream_completion_has_usage(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", ["Paris [1]"], usage=False)  # usage=False only affects streams
    completion = client(fake_openai).chat.completions.create(model="small", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Paris [1]"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2
    assert completion.usage.prompt_tokens == 6


@pytest.mark.parametrize("usage_enabled", [True, False])
def test_usage_chunk_only_when_requested_and_enabled(
    fake_openai: FakeOpenAI, usage_enabled: bool
) -> None:
    fake_openai.configure("small", usage=usage_enabled)
    chunks = list(
        client(fake_openai).chat.completions.create(
            model="small",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage_chunks = [c for c in chunks if c.usage is not None]
    if usage_enabled:
        assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0]
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    else:  # llama.cpp's server sends no usage even when asked
        assert usage_chunks == []
    # Never unasked:
    assert all(
        c.usage is None
        for c in client(fake_openai).chat.completions.create(
            model="small", messages=MESSAGES, stream=True
        )
    )


def test_models_endpoint_lists_scripted_models(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", ["a"])
    fake_openai.set_default("large", "b")
    assert [m.id for m in client(fake_openai).models.list()] == ["small", "large"]


def test_any_base_path_prefix_is_served(fake_openai: FakeOpenAI) -> None:
    ai = OpenAI(base_url=f"{fake_openai.url}/proxy/openai/v1", api_key="k", max_retries=0)
    completion = ai.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == GENERIC_REPLY
    assert fake_openai.requests[0].path == "/proxy/openai/v1/chat/completions"


# -- scripting ---------------------------------------------------------------------------


def test_replies_come_in_order_then_default_then_generic(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", ["one", "two"])
    fake_openai.set_default("small", "fallback")
    assert [stream_text(fake_openai) for _ in range(4)] == ["one", "two", "fallback", "fallback"]
    assert stream_text(fake_openai, model="unscripted") == GENERIC_REPLY
    assert fake_openai.pending("small") == 0


def test_queues_are_per_model(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", ["from small"])
    fake_openai.script("large", ["from large"])
    assert stream_text(fake_openai, model="large") == "from large"
    assert stream_text(fake_openai, model="small") == "from small"


def test_callable_reply_sees_the_request(fake_openai: FakeOpenAI) -> None:
    def shout(request: dict[str, Any]) -> str:
        return str(request["messages"][-1]["content"]).upper()

    fake_openai.script("small", [shout])
    assert stream_text(fake_openai) == "WHAT IS THE CAPITAL OF FRANCE?"


def test_callable_that_raises_gives_a_500_naming_the_error(fake_openai: FakeOpenAI) -> None:
    def broken(request: dict[str, Any]) -> str:
        raise KeyError("no_such_key")

    fake_openai.script("small", [broken])
    with pytest.raises(openai.InternalServerError, match="no_such_key"):
        stream_text(fake_openai)


def test_echo_context_cites_the_first_passage(fake_openai: FakeOpenAI) -> None:
    system = "Answer from the sources. Cite them like [n]."
    context = (
        "Sources:\n[1] runbook.md > Rollback\nRollbacks take 2.5 minutes. Run deploy.sh first.\n\n"
        "[2] faq.md\nOther text."
    )
    request = {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": f"{context}\n\nQuestion: how long?"},
        ]
    }
    assert echo_context(request) == "Rollbacks take 2.5 minutes. [1]"
    assert echo_context({"messages": [{"role": "user", "content": "[1] Only line here"}]}) == (
        "Only line here [1]"
    )
    assert echo_context({"messages": MESSAGES}) == NOT_FOUND_REPLY
    fake_openai.set_default("small", echo_context)
    assert stream_text(fake_openai) == NOT_FOUND_REPLY


def test_token_delays_are_applied(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", ["a b c d"], token_delay_s=0.05, first_token_delay_s=0.2)
    start = time.monotonic()
    stream = client(fake_openai).chat.completions.create(
        model="small", messages=MESSAGES, stream=True
    )
    arrivals = [
        time.monotonic() - start for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert arrivals[0] >= 0.19
    assert arrivals[-1] - arrivals[0] >= 0.14  # three more tokens, 0.05 s apart


# -- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error"),
    [(500, openai.InternalServerError), (503, openai.InternalServerError)],
)
def test_status_fault_raises_with_json_error_body(
    fake_openai: FakeOpenAI, code: int, error: type[Exception]
) -> None:
    fake_openai.script("small", [Fault.status(code, "model is loading")])
    with pytest.raises(error, match="model is loading") as info:
        stream_text(fake_openai)
    assert isinstance(info.value, openai.APIStatusError) and info.value.status_code == code
    assert info.value.body == {
        "message": "model is loading",
        "type": "server_error",
        "param": None,
        "code": str(code),
    }


def test_503_then_success_is_retried_by_the_client(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", [Fault.status(503, retry_after_s=0.01), "recovered"])
    ai = client(fake_openai, max_retries=2)
    text = ai.chat.completions.create(model="small", messages=MESSAGES).choices[0].message.content
    assert text == "recovered"
    assert [r.outcome for r in fake_openai.requests] == ["fault:status", "ok"]


def test_hang_times_out_the_client(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", [Fault.hang()])
    with pytest.raises(openai.APITimeoutError):
        stream_text(fake_openai, timeout=0.3)


def test_hang_mid_stream_times_out_the_reader(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", [Fault.hang(after_tokens=1, reply="first second")])
    stream = client(fake_openai, timeout=0.3).chat.completions.create(
        model="small", messages=MESSAGES, stream=True
    )
    seen: list[str] = []
    with pytest.raises(openai.APITimeoutError):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "first "


def test_hang_does_not_block_stop() -> None:
    fake = FakeOpenAI().start()
    fake.script("small", [Fault.hang()])
    errors: list[BaseException] = []

    def call() -> None:
        try:
            stream_text(fake, timeout=30.0)
        except Exception as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    fake.wait_for_requests(1)
    start = time.monotonic()
    fake.stop()
    assert time.monotonic() - start < 2.0
    caller.join(timeout=5)
    assert not caller.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], openai.APIConnectionError)


def test_slow_first_token(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", [Fault.slow_first_token(0.3, reply="late answer")])
    start = time.monotonic()
    assert stream_text(fake_openai) == "late answer"
    assert time.monotonic() - start >= 0.29
    with pytest.raises(openai.APITimeoutError):
        fake_openai.script("small", [Fault.slow_first_token(1.0)])
        stream_text(fake_openai, timeout=0.2)


def test_cut_after_truncates_the_stream_with_an_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", [Fault.cut_after(2, reply="one two three four")])
    stream = client(fake_openai).chat.completions.create(
        model="small", messages=MESSAGES, stream=True
    )
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "one two "


def test_cut_after_non_stream_is_a_connection_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", [Fault.cut_after(1)])
    with pytest.raises(openai.APIConnectionError):
        client(fake_openai).chat.completions.create(model="small", messages=MESSAGES)


def test_malformed_chunk_fails_json_decoding(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", [Fault.malformed(after_tokens=1, reply="good bad")])
    stream = client(fake_openai).chat.completions.create(
        model="small", messages=MESSAGES, stream=True
    )
    seen: list[str] = []
    with pytest.raises(json.JSONDecodeError):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "good "


def test_empty_stream_has_no_content_but_finishes(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", [Fault.empty()])
    events = raw_stream(fake_openai, {"model": "small", "messages": MESSAGES, "stream": True})
    assert events[-1] == "[DONE]"
    fake_openai.script("small", [Fault.empty()])
    assert stream_text(fake_openai) == ""


def test_default_fault_fails_every_request(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_default("down", Fault.status(503))
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            stream_text(fake_openai, model="down")


def test_closed_port_refuses_connection() -> None:
    ai = OpenAI(base_url=closed_port_url(), api_key="k", max_retries=0, timeout=2.0)
    with pytest.raises(openai.APIConnectionError):
        ai.chat.completions.create(model="small", messages=MESSAGES)


# -- request log -------------------------------------------------------------------------


def test_request_log_records_model_messages_body_path_headers(fake_openai: FakeOpenAI) -> None:
    stream_text(fake_openai, model="small", temperature=0.1)
    client(fake_openai).chat.completions.create(model="large", messages=MESSAGES)
    small, large = fake_openai.requests
    assert small.model == "small" and small.stream and not large.stream
    assert small.messages == MESSAGES
    assert small.body["temperature"] == 0.1
    assert small.path == "/v1/chat/completions"
    assert small.headers["authorization"] == "Bearer test-key"
    assert "capital of France" in small.text
    assert small.outcome == "ok"
    assert fake_openai.requests_for("large") == [large]


def test_concurrent_requests_are_all_served_and_logged(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_default("small", "x y z")
    fake_openai.configure("small", token_delay_s=0.02)

    async def run() -> list[str]:
        async with AsyncOpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=0) as ai:

            async def one() -> str:
                stream = await ai.chat.completions.create(
                    model="small", messages=MESSAGES, stream=True
                )
                return "".join([c.choices[0].delta.content or "" async for c in stream])

            return await asyncio.gather(*(one() for _ in range(20)))

    start = time.monotonic()
    assert asyncio.run(run()) == ["x y z"] * 20
    assert time.monotonic() - start < 3.0  # served in parallel, not 20 x 0.04 s in series
    assert len(fake_openai.wait_for_requests(20, model="small")) == 20


def test_api_key_is_enforced_when_set() -> None:
    with FakeOpenAI(api_key="secret") as fake:
        with pytest.raises(openai.AuthenticationError):
            client(fake, api_key="wrong").chat.completions.create(model="m", messages=MESSAGES)
        assert client(fake, api_key="secret").models.list().data == []


# -- script files and standalone mode ----------------------------------------------------


def test_script_file_configures_models(tmp_path: Path) -> None:
    script = {
        "models": {
            "small": {
                "replies": ["first", {"fault": "status", "status": 503}],
                "default": "@echo-context",
                "usage": False,
                "token_delay_s": 0.0,
            }
        }
    }
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    with FakeOpenAI.from_script(path) as fake:
        assert stream_text(fake) == "first"
        with pytest.raises(openai.InternalServerError):
            stream_text(fake)
        assert stream_text(fake) == NOT_FOUND_REPLY


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ({"modles": {}}, "only key is 'models'"),
        ({"models": {"m": {"reply": "x"}}}, "choose from default"),
        ({"models": {"m": {"replies": [{"fault": "explode"}]}}}, "choose from status"),
        ({"models": {"m": {"replies": [{"fault": "cut_after"}]}}}, "bad arguments"),
    ],
)
def test_bad_script_names_the_problem(script: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FakeOpenAI().load_script(script)


def test_standalone_process_serves_the_script(tmp_path: Path, free_port: int) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"models": {"small": {"default": "@echo-context"}}}))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rag.measure.fake_openai",
            "--port",
            str(free_port),
            "--script",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"http://127.0.0.1:{free_port}/v1" in banner
        ai = OpenAI(base_url=f"http://127.0.0.1:{free_port}/v1", api_key="k", max_retries=0)
        prompt: list[Any] = [
            {"role": "user", "content": "[1] a.md\nThe sky is blue. Really.\n\nQ: colour?"}
        ]
        chunks = ai.chat.completions.create(model="small", messages=prompt, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The sky is blue. [1]"
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0


# -- conftest helpers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [("10.255.255.1", 80), ("8.8.8.8", 53), ("2001:db8::1", 443, 0, 0), ("example.com", 80)],
)
def test_network_guard_blocks_non_loopback(
    network_guard: NetworkGuard, address: tuple[Any, ...]
) -> None:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)  # never reached: the guard raises before any packet is sent
        with pytest.raises(NetworkBlockedError, match="may only reach"):
            sock.connect(address)
        with pytest.raises(NetworkBlockedError):
            sock.connect_ex(address)
    with pytest.raises(NetworkBlockedError):
        socket.create_connection(address[:2], timeout=0.5)
    assert len(network_guard.blocked) == 3
    network_guard.blocked.clear()  # provoked on purpose; don't fail at teardown


def test_network_guard_blocks_http_clients(network_guard: NetworkGuard) -> None:
    url = "http://10.255.255.1/v1"
    ai = OpenAI(base_url=url, api_key="k", max_retries=0, timeout=0.5)
    with pytest.raises(NetworkBlockedError):
        ai.chat.completions.create(model="m", messages=MESSAGES)

    async def run() -> None:
        async with AsyncOpenAI(base_url=url, api_key="k", max_retries=0, timeout=0.5) as aio:
            await aio.chat.completions.create(model="m", messages=MESSAGES)

    with pytest.raises((NetworkBlockedError, ExceptionGroup)):  # anyio may group it
        asyncio.run(run())
    assert len(network_guard.blocked) == 2  # recorded, so swallowing it still fails at teardown
    network_guard.blocked.clear()


def test_network_guard_allows_loopback_and_unix(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    for host in ("127.0.0.1", "localhost"):
        with socket.create_connection((host, fake_openai.port), timeout=1):
            pass
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(tmp_path / "s.sock"))
        server.listen()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(tmp_path / "s.sock"))


def test_screenshot_path_is_safe(repo_root: Path) -> None:
    path = screenshot_path("test_chat[What is /etc?]")
    assert path.parent == repo_root / "artifacts" / "screenshots"
    assert path.name == "test_chat_What_is_etc.png"


INNER_BROWSER_TESTS = """
    import pathlib, pytest

    class FakePage:
        def screenshot(self, path, **kwargs):
            pathlib.Path(path).write_bytes(b"png")

    @pytest.fixture
    def page():
        return FakePage()

    @pytest.mark.browser
    def test_broken_chat(page):
        assert False

    @pytest.mark.browser
    def test_working_chat(page):
        pass

    def test_not_browser(page):
        assert False
"""


def test_failing_browser_test_saves_a_screenshot(pytester: pytest.Pytester) -> None:
    # The real conftest, run by an inner pytest in a copy of the layout: <tmp>/tests/conftest.py,
    # so <tmp> is the repo root that artifacts/ goes under.
    inner = pytester.mkdir("tests")
    conftest = (Path(__file__).resolve().parents[1] / "conftest.py").read_text()
    (inner / "conftest.py").write_text(conftest)
    pytester.makeini("[pytest]\naddopts = --strict-markers\nmarkers =\n    browser: b\n")
    (inner / "test_inner_browser.py").write_text(textwrap.dedent(INNER_BROWSER_TESTS))
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1, failed=2)
    shots = pytester.path / "artifacts" / "screenshots"
    assert sorted(p.name for p in shots.iterdir()) == ["test_broken_chat.png"]
    assert (shots.parent / ".gitignore").read_text() == "*\n"
