"""The Milvus store against the same contract as the local retrievers, on real milvus-lite.

Every contract runs twice: milvus-lite in process (a ``.db`` under tmp) and a
``milvus-lite server --host 127.0.0.1 --port <free>`` started once per session. Each test gets
its own collection. Fast tests embed with hashed character trigrams (a real, deterministic
384-d encoder without model files); the @slow ones use the built ONNX model.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from rag.config import BM25Config, Config, MilvusConfig, RetrievalConfig, load_config
from rag.errors import IndexError_, RetrieverUnavailable
from rag.index import IndexManager
from rag.measure.fake_openai import free_port
from rag.retrieval import make_retriever
from rag.retrieval import milvus as milvus_module
from rag.retrieval.base import Retriever
from rag.retrieval.bm25 import BM25Retriever
from rag.retrieval.encoder import Encoder
from rag.retrieval.milvus import MilvusRetriever, Mode, display_uri, release
from rag.retrieval.milvus import client as milvus_client
from tests.unit.retriever_contract import (
    CORPUS,
    RetrieverContract,
    TrigramEncoder,
    chunk,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = REPO_ROOT / ".rag"


def milvus_cfg(uri: str, collection: str, data_dir: Path = MODELS, **milvus: Any) -> Config:
    settings = MilvusConfig(uri=uri, collection=collection, **milvus)
    return Config(data_dir=data_dir, retrieval=RetrievalConfig(store="milvus", milvus=settings))


def unique_collection() -> str:
    return f"t{uuid.uuid4().hex[:16]}"


# ---- where milvus runs ----


@pytest.fixture(scope="module")
def lite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded milvus-lite database file, shared by a module's tests (one collection each)."""
    path = str(tmp_path_factory.mktemp("milvus-lite") / "test.db")
    yield path
    release(path)


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`milvus-lite server` on a free loopback port, once it answers gRPC."""
    port = free_port()
    log = data_dir.parent / f"{data_dir.name}.log"
    command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir)]
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"milvus-lite server exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            MilvusClient(uri=uri, timeout=5).close()
            return proc, uri
        except (OSError, MilvusException):
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"milvus-lite server did not answer on {uri}") from None
            time.sleep(0.2)


def stop_server(proc: subprocess.Popen[bytes], uri: str) -> None:
    release(uri)
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def lite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `milvus-lite server --host 127.0.0.1` for the whole session; its http:// URI."""
    proc, uri = start_server(tmp_path_factory.mktemp("milvus-server") / "data")
    yield uri
    stop_server(proc, uri)


# ---- the contract, twice per retriever ----


def settle(retriever: MilvusRetriever) -> None:
    """Build the indexes of just-flushed segments now, as reloading does.

    milvus-lite builds them in a background thread and searches a segment by brute force
    until then, so a score can change in its last bits between two searches of a fresh build.
    """
    name = retriever.collection
    retriever._call("settle", lambda c: (c.release_collection(name), c.load_collection(name)))


class MilvusContract(RetrieverContract):
    mode: Mode
    uri: str
    collection: str

    @pytest.fixture
    def built(self) -> Retriever:
        retriever = self.make_retriever()
        retriever.build(CORPUS)
        assert isinstance(retriever, MilvusRetriever)
        settle(retriever)
        return retriever

    def encoder(self) -> Encoder | None:
        return TrigramEncoder() if self.mode != "bm25" else None

    def make_retriever(self) -> Retriever:
        cfg = milvus_cfg(self.uri, self.collection)
        return MilvusRetriever(cfg, self.mode, encoder=self.encoder())


class InProcess:
    @pytest.fixture(autouse=True)
    def _where(self, lite_db: str) -> None:
        self.uri, self.collection = lite_db, unique_collection()


class OnServer:
    @pytest.fixture(autouse=True)
    def _where(self, lite_server: str) -> None:
        self.uri, self.collection = lite_server, unique_collection()


class TestBM25InProcess(InProcess, MilvusContract):
    mode = "bm25"


class TestEmbeddingInProcess(InProcess, MilvusContract):
    mode = "embedding"


class TestHybridInProcess(InProcess, MilvusContract):
    mode = "hybrid"


class TestBM25OnServer(OnServer, MilvusContract):
    mode = "bm25"


class TestEmbeddingOnServer(OnServer, MilvusContract):
    mode = "embedding"


class TestHybridOnServer(OnServer, MilvusContract):
    mode = "hybrid"


_REAL: list[Encoder] = []


def real_encoder() -> Encoder:
    """The built ONNX encoder, loaded once; skips the test when the model is not built."""
    from rag.retrieval.encoder import load_encoder

    if not _REAL:
        try:
            _REAL.append(load_encoder(Config(data_dir=MODELS)))
        except RetrieverUnavailable as exc:
            pytest.skip(f"ONNX embedding model not built: {exc}")
    return _REAL[0]


@pytest.mark.slow
class TestEmbeddingRealModel(InProcess, MilvusContract):
    mode = "embedding"

    def encoder(self) -> Encoder | None:
        return real_encoder()


@pytest.mark.slow
class TestHybridRealModel(OnServer, MilvusContract):
    mode = "hybrid"

    def encoder(self) -> Encoder | None:
        return real_encoder()


# ---- configuration ----


def test_store_milvus_is_one_config_key(tmp_path: Path) -> None:
    env = {"RAG__RETRIEVAL__STORE": "milvus", "MILVUS_URI": "http://127.0.0.1:19530"}
    cfg = load_config(None, environ=env)
    for name in ("bm25", "embedding", "hybrid"):
        retriever = make_retriever(name, cfg)
        assert isinstance(retriever, MilvusRetriever)
        assert retriever.name == name and retriever.uri == "http://127.0.0.1:19530"
        assert retriever.collection == f"docs_chunks_{name}"
    assert not isinstance(make_retriever("lexical", cfg), MilvusRetriever)
    assert not isinstance(make_retriever("bm25", load_config(None, environ={})), MilvusRetriever)


def test_fingerprint_names_the_store_schema_index_and_model(lite_db: str) -> None:
    cfg = milvus_cfg(lite_db, "docs")
    fp = MilvusRetriever(cfg, "hybrid").fingerprint()
    assert fp["store"] == "milvus" and fp["collection"] == "docs_hybrid"
    assert fp["schema"] == milvus_module.SCHEMA_VERSION
    assert fp["index_type"] == "HNSW" and fp["hnsw_m"] == "16"
    assert fp["embedding.model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert fp["bm25.k1"] == repr(cfg.retrieval.bm25.k1) and fp["bm25.stemming"] == "english"
    search_only = milvus_cfg(lite_db, "docs", search_ef=128, rrf_k=10)
    assert MilvusRetriever(search_only, "hybrid").fingerprint() == fp  # no rebuild for these


def test_bm25_parameters_reach_the_index(lite_db: str) -> None:
    scores = []
    for k1 in (0.5, 3.0):
        settings = MilvusConfig(uri=lite_db, collection=unique_collection())
        bm25 = BM25Config(k1=k1)
        cfg = Config(retrieval=RetrievalConfig(store="milvus", milvus=settings, bm25=bm25))
        retriever = MilvusRetriever(cfg, "bm25")
        retriever.build(CORPUS)
        scores.append(retriever.search("rollback script", 1)[0].score)
    assert scores[0] != pytest.approx(scores[1])


@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
def test_bm25_scores_are_on_the_local_scale(lite_db: str, mode: Mode) -> None:
    """Same terms, same statistics: Milvus BM25 scores match bm25s's, so one weak_context fits."""
    cfg = milvus_cfg(lite_db, unique_collection())
    retriever = MilvusRetriever(cfg, mode, encoder=TrigramEncoder())
    retriever.build(CORPUS)
    bm25 = retriever if mode == "bm25" else retriever.sparse
    assert bm25 is not None and bm25.name == "bm25"
    local = BM25Retriever(cfg.retrieval.bm25)
    local.build(CORPUS)
    for query in ("roll back a failed deployment", "rotate api keys", "canary release traffic"):
        ours, theirs = bm25.search(query, 3), local.search(query, 3)
        assert [h.chunk.id for h in ours] == [h.chunk.id for h in theirs]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], rel=1e-4)


def test_only_hybrid_has_a_bm25_side(lite_db: str) -> None:
    assert MilvusRetriever(milvus_cfg(lite_db, "docs"), "bm25").sparse is None
    assert MilvusRetriever(milvus_cfg(lite_db, "docs"), "embedding").sparse is None


def test_bad_collection_name_is_refused_with_the_fix() -> None:
    from rag.errors import ConfigError

    with pytest.raises(ConfigError, match="not a valid Milvus collection name"):
        MilvusRetriever(milvus_cfg("x.db", "docs-chunks"), "bm25")


def test_credentials_never_appear_in_messages_or_state() -> None:
    assert (
        display_uri("https://root:s3cret@milvus.internal:19530") == "https://milvus.internal:19530"
    )
    assert display_uri("http://127.0.0.1:19530") == "http://127.0.0.1:19530"


# ---- incremental updates and rebuilds ----


def _count(retriever: MilvusRetriever) -> int:
    return len(retriever._stored_rows())


def test_add_change_delete_touch_only_those_rows(lite_db: str) -> None:
    cfg = milvus_cfg(lite_db, unique_collection())
    encoder = TrigramEncoder()
    first = MilvusRetriever(cfg, "hybrid", encoder=encoder)
    first.build(CORPUS)
    assert first.last_encoded == len(CORPUS) - 1  # the two identical canary chunks share one
    encoder.encoded.clear()

    added = chunk("parking.md#bays", "Parking", "Bays", "Parking bays fourteen to twenty.")
    changed = chunk("oncall.md#paging", "On-call", "Paging", "The pager now rotates monthly.")
    kept = [c for c in CORPUS if c.id not in ("oncall.md#paging", "network.md#vpn")]
    second = MilvusRetriever(cfg, "hybrid", encoder=encoder)
    second.build([*kept, added, changed])

    assert sorted(encoder.encoded) == sorted(
        f"{c.title}\n{c.heading}\n{c.text}" for c in (added, changed)
    )
    assert second.last_encoded == 2
    assert _count(second) == len(kept) + 2
    assert "parking.md#bays" in {h.chunk.id for h in second.search("parking bays", 3)}
    assert "monthly" in second.search("pager rotates monthly", 1)[0].chunk.text
    assert all(h.chunk.id != "network.md#vpn" for h in second.search("VPN dashboards", 5))

    encoder.encoded.clear()
    MilvusRetriever(cfg, "hybrid", encoder=encoder).build([*kept, added, changed])
    assert encoder.encoded == []  # nothing changed: nothing encoded, nothing written


def test_model_change_rebuilds_the_collection_with_a_message(lite_db: str, tmp_path: Path) -> None:
    cfg = milvus_cfg(lite_db, unique_collection())
    old = MilvusRetriever(cfg, "embedding", encoder=TrigramEncoder("model-a"))
    old.build(CORPUS)
    old.save(tmp_path)
    new_encoder = TrigramEncoder("model-b")
    new = MilvusRetriever(cfg, "embedding", encoder=new_encoder)
    messages: list[str] = []
    new.progress = messages.append

    with pytest.raises(IndexError_, match="other settings"):
        new.load(tmp_path, CORPUS)
    new.build(CORPUS)

    assert any("dropping it and rebuilding" in m for m in messages)
    assert any("embedding.model: model-a → model-b" in m for m in messages)
    assert new.last_encoded == len(CORPUS) - 1
    assert _count(new) == len(CORPUS)


def test_reset_drops_the_collection_for_a_build_from_scratch(lite_db: str) -> None:
    encoder = TrigramEncoder()
    retriever = MilvusRetriever(milvus_cfg(lite_db, unique_collection()), "hybrid", encoder)
    retriever.build(CORPUS)
    retriever.reset()
    assert retriever.search("rollback", 3) == [] and retriever._recorded_fingerprint() is None
    retriever.build(CORPUS)
    assert retriever.last_encoded == len(CORPUS) - 1 and _count(retriever) == len(CORPUS)


def test_load_detects_a_collection_changed_behind_its_back(lite_db: str, tmp_path: Path) -> None:
    cfg = milvus_cfg(lite_db, unique_collection())
    retriever = MilvusRetriever(cfg, "bm25")
    retriever.build(CORPUS)
    retriever.save(tmp_path)
    retriever._delete([milvus_module.chunk_pk(CORPUS[0].id)])
    with pytest.raises(IndexError_, match="1 missing"):
        MilvusRetriever(cfg, "bm25").load(tmp_path, CORPUS)
    retriever._call("drop", lambda c: c.drop_collection(retriever.collection))
    with pytest.raises(IndexError_, match="does not exist"):
        MilvusRetriever(cfg, "bm25").load(tmp_path, CORPUS)


def test_index_manager_updates_a_milvus_index_incrementally(lite_db: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "vpn.md").write_text("# VPN\n## Access\nThe VPN gateway is vpn.acme.test.\n")
    (corpus / "leave.md").write_text("# Leave\nEmployees get 27 vacation days per year.\n")
    env = {
        "RAG__DATA_DIR": str(tmp_path / "data"),
        "RAG__CORPUS__PATH": str(corpus),
        "RAG__RETRIEVAL__STORE": "milvus",
        "RAG__RETRIEVAL__MILVUS__COLLECTION": unique_collection(),
        "MILVUS_URI": lite_db,
    }
    cfg = load_config(None, environ=env)
    _, status = IndexManager(cfg).open("bm25")
    assert status.action == "built"
    retriever, status = IndexManager(cfg).open("bm25")
    assert status.action == "loaded" and isinstance(retriever, MilvusRetriever)

    (corpus / "leave.md").write_text("# Leave\nEmployees get 30 vacation days per year.\n")
    (corpus / "parking.md").write_text("# Parking\nBays 14 to 20 on level -2.\n")
    retriever, status = IndexManager(cfg).open("bm25")
    assert status.action == "updated"
    assert "30 vacation" in retriever.search("vacation days", 1)[0].chunk.text
    assert isinstance(retriever, MilvusRetriever) and _count(retriever) == 3


# ---- failures ----


def test_unreachable_server_says_what_is_unavailable_and_what_works(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    cfg = milvus_cfg(uri, "docs", data_dir=tmp_path, retries=1, timeout_s=2)
    started = time.monotonic()
    with pytest.raises(RetrieverUnavailable, match=rf"retrieval on Milvus at {uri} is unavailable"):
        MilvusRetriever(cfg, "bm25").build(CORPUS)
    MilvusRetriever(cfg, "bm25").save(tmp_path)  # writes state only; needs no server
    with pytest.raises(RetrieverUnavailable, match="lexical retriever, and the local store"):
        MilvusRetriever(cfg, "bm25").load(tmp_path, CORPUS)
    assert time.monotonic() - started < 30


def test_transient_errors_are_retried_with_backoff(
    lite_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(milvus_client, "BACKOFF_S", 0.01)
    retriever = MilvusRetriever(milvus_cfg(lite_db, unique_collection(), retries=2), "bm25")
    attempts: list[int] = []

    def flaky(client: Any) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise MilvusException(message="server unavailable, try again")
        return "ok"

    assert retriever._call("flaky", flaky) == "ok" and len(attempts) == 3

    def broken(client: Any) -> str:
        attempts.append(1)
        raise MilvusException(message="collection not found")

    attempts.clear()
    with pytest.raises(RetrieverUnavailable, match="broken failed: collection not found"):
        retriever._call("broken", broken)
    assert len(attempts) == 1  # not transient: no retry


def test_missing_token_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAG_TEST_MILVUS_TOKEN", raising=False)
    cfg = milvus_cfg("http://127.0.0.1:1", "docs", token_env="RAG_TEST_MILVUS_TOKEN")
    with pytest.raises(RetrieverUnavailable, match="RAG_TEST_MILVUS_TOKEN is not set"):
        MilvusRetriever(cfg, "bm25").build(CORPUS)


@pytest.mark.slow
def test_server_that_goes_away_mid_session(tmp_path: Path) -> None:
    proc, uri = start_server(tmp_path / "data")
    try:
        cfg = milvus_cfg(uri, "docs", data_dir=tmp_path, retries=1, timeout_s=2)
        retriever = MilvusRetriever(cfg, "bm25")
        retriever.build(CORPUS)
        assert retriever.search("roll back a deployment", 1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    with pytest.raises(RetrieverUnavailable, match=f"retrieval on Milvus at {uri} is unavailable"):
        retriever.search("roll back a deployment", 1)
    release(uri)


@pytest.mark.slow
def test_a_db_file_open_in_another_process_is_explained(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pymilvus import MilvusClient; "
         f"MilvusClient(uri={str(db)!r}); print('ready', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        cfg = milvus_cfg(str(db), "docs", data_dir=tmp_path, retries=0)
        with pytest.raises(RetrieverUnavailable, match="one process per data directory"):
            MilvusRetriever(cfg, "bm25").build(CORPUS)
    finally:
        holder.kill()
        holder.wait()
