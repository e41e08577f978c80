"""Safe defaults and input limits that hold without any model."""

import asyncio
from pathlib import Path

import pytest

from rag.assistant import AskOptions, Assistant
from rag.cli import check_bind, main
from rag.config import Config, load_config
from rag.errors import ConfigError, InputError
from rag.escalation import SignalPolicy
from rag.index import IndexManager
from rag.measure.fake_openai import closed_port_url
from rag.models import make_chat_model
from rag.types import Done, Failed


def test_default_bind_is_loopback() -> None:
    assert Config().server.host == "127.0.0.1"
    assert Config().models.embedded.host == "127.0.0.1"


def test_other_addresses_need_authentication() -> None:
    with pytest.raises(ConfigError, match=r"without authentication.*CHAINLIT_AUTH_SECRET"):
        check_bind("0.0.0.0", environ={})
    check_bind("0.0.0.0", environ={"CHAINLIT_AUTH_SECRET": "s", "RAG_USERS": "a:b"})
    check_bind("127.0.0.1", environ={})


def test_rag_serve_refuses_public_bind_with_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "refusing to bind 0.0.0.0" in capsys.readouterr().err


def test_secrets_are_read_from_the_named_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_TEST_KEY", "sk-test-123")
    cfg = load_config(None, environ={"RAG__MODELS__SLM__API_KEY_ENV": "MY_TEST_KEY"})
    model = make_chat_model(cfg, "slm")
    assert model._client.api_key == "sk-test-123"
    assert "sk-test" not in Path("rag.yaml").read_text()


def _assistant(tmp_path: Path) -> Assistant:
    corpus = tmp_path / "kb"
    corpus.mkdir()
    (corpus / "a.md").write_text("# A\nThe VPN port is 4443.\n")
    url = closed_port_url()
    cfg = load_config(
        None,
        environ={
            "RAG__DATA_DIR": str(tmp_path / "d"),
            "RAG__CORPUS__PATH": str(corpus),
            "RAG__RETRIEVAL__RETRIEVER": "lexical",
            "RAG__MODELS__SLM__BASE_URL": url,
            "RAG__MODELS__LLM__BASE_URL": url,
            "RAG__MODELS__TIMEOUTS__RETRIES": "0",
        },
    )
    return Assistant(
        cfg,
        IndexManager(cfg),
        make_chat_model(cfg, "slm"),
        make_chat_model(cfg, "llm"),
        SignalPolicy.from_config(cfg.escalation),
    )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("x" * 1_000_000, "1,000,000 characters long; the limit is 8,000"),
        ("\u200b\u200b\ufeff", "empty"),
        ("\x00\x01\x02", "empty"),
    ],
)
def test_oversized_and_invisible_messages_are_refused(
    tmp_path: Path, message: str, expected: str
) -> None:
    assistant = _assistant(tmp_path)
    with pytest.raises(InputError, match=expected):
        assistant.check_question(message)


def test_empty_corpus_answers_without_crashing(tmp_path: Path) -> None:
    assistant = _assistant(tmp_path)
    (assistant.cfg.corpus.path / "a.md").unlink()

    async def run() -> list[object]:
        return [ev async for ev in assistant.ask("What is the VPN port?", AskOptions(mode="auto"))]

    events = asyncio.run(run())
    assert not any(isinstance(e, Failed) for e in events)
    done = events[-1]
    assert isinstance(done, Done) and done.abstained
