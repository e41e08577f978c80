from rag.config import Config
from rag.retrieval.lexical import LexicalRetriever
from rag.types import Chunk
from tests.unit.retriever_contract import RetrieverContract


class TestLexicalContract(RetrieverContract):
    def make_retriever(self) -> LexicalRetriever:
        return LexicalRetriever.from_config(Config())


def _c(cid: str, text: str) -> Chunk:
    return Chunk(id=cid, doc_id=cid, path=cid, title="", heading="", text=text, ordinal=0)


def test_whole_words_only_no_substring_matches() -> None:
    r = LexicalRetriever()
    r.build([_c("data.md", "The data warehouse refreshes nightly."), _c("a.md", "A is for apple.")])
    # "a" is a stopword and never matches inside "data"; "at" neither
    assert r.search("a", 5) == []
    hits = r.search("data at", 5)
    assert [h.chunk.id for h in hits] == ["data.md"]


def test_length_normalised_short_focused_chunk_wins() -> None:
    r = LexicalRetriever()
    long = "vpn " + " ".join(f"filler{i}" for i in range(200))
    r.build([_c("long.md", long), _c("short.md", "VPN port 4443")])
    assert r.search("vpn", 2)[0].chunk.id == "short.md"


def test_case_and_punctuation_insensitive() -> None:
    r = LexicalRetriever()
    r.build([_c("x.md", "Rotate API-keys every 90 days!")])
    assert r.search("rotate api-keys", 1)[0].chunk.id == "x.md"
