from pathlib import Path
from typing import get_args

import pytest

from rag.config import Config, RetrieverName, base_url_for, load_config
from rag.errors import ConfigError
from rag.retrieval import RETRIEVERS


def test_shipped_rag_yaml_loads_and_matches_defaults(repo_root: Path) -> None:
    cfg = load_config(repo_root / "rag.yaml", environ={})
    assert cfg == Config()  # every key in rag.yaml documents its default


def test_retriever_literal_and_registry_agree() -> None:
    assert set(get_args(RetrieverName)) == set(RETRIEVERS)


def test_env_override_parses_scalars() -> None:
    cfg = load_config(
        None, environ={"RAG__RETRIEVAL__TOP_K": "7", "RAG__RETRIEVAL__RETRIEVER": "bm25"}
    )
    assert cfg.retrieval.top_k == 7
    assert cfg.retrieval.retriever == "bm25"


def test_bad_value_names_key_value_and_choices(tmp_path: Path) -> None:
    p = tmp_path / "rag.yaml"
    p.write_text("retrieval:\n  retriever: fancy\n")
    with pytest.raises(ConfigError, match=r"retrieval\.retriever.*'lexical', 'bm25'.*fancy"):
        load_config(p, environ={})


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "rag.yaml"
    p.write_text("retrieval:\n  top_kk: 3\n")
    with pytest.raises(ConfigError, match=r"retrieval\.top_kk: Extra inputs are not permitted"):
        load_config(p, environ={})


def test_malformed_yaml_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "rag.yaml"
    p.write_text("retrieval: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p, environ={})


def test_env_override_with_bad_mode_lists_choices() -> None:
    with pytest.raises(ConfigError, match="'auto', 'never', 'always' or 'compare'"):
        load_config(None, environ={"RAG__ESCALATION__MODE": "sometimes"})


def test_overlap_must_be_below_chunk_size() -> None:
    with pytest.raises(ConfigError, match="overlap_words"):
        load_config(
            None, environ={"RAG__CORPUS__OVERLAP_WORDS": "500", "RAG__CORPUS__CHUNK_WORDS": "100"}
        )


def test_provider_urls_and_foundry_endpoint_override() -> None:
    cfg = load_config(None, environ={"RAG__MODELS__SLM__PROVIDER": "ollama"})
    assert base_url_for(cfg.models.slm, cfg.models.embedded, "slm") == "http://localhost:11434/v1"
    assert base_url_for(cfg.models.llm, cfg.models.embedded, "llm") == "http://127.0.0.1:8102/v1"
    cfg = load_config(
        None,
        environ={
            "RAG__MODELS__LLM__PROVIDER": "foundry-local",
            "FOUNDRY_LOCAL_ENDPOINT": "http://127.0.0.1:6000",
        },
    )
    assert base_url_for(cfg.models.llm, cfg.models.embedded, "llm") == "http://127.0.0.1:6000/v1"


def test_openai_compatible_needs_a_base_url() -> None:
    cfg = load_config(None, environ={"RAG__MODELS__SLM__PROVIDER": "openai-compatible"})
    with pytest.raises(ConfigError, match="base_url is required"):
        base_url_for(cfg.models.slm, cfg.models.embedded, "slm")


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(Exception, match="frozen"):
        cfg.retrieval.top_k = 3  # type: ignore[misc]


@pytest.mark.parametrize("key", ["weak_context", "min_margin"])
def test_a_mistyped_retriever_key_in_a_per_retriever_map_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"escalation\.{key}\.bm52.*'lexical', 'bm25'"):
        load_config(None, environ={f"RAG__ESCALATION__{key.upper()}": "{bm52: 1.0}"})
