"""Check the docs QA set in eval/docs_qa/ against the demo corpus in docs_corpus/.

Usage: ``.venv/bin/python eval/docs_qa/check.py`` (exit status 0 when everything holds).

Standard library only, except that PDF text is extracted with pypdf (a project dependency),
imported only when a PDF is read. Checks:

- queries.jsonl and answers.jsonl hold the same ids (q001, q002, ...) in the same order;
- every answerable question has 1-3 short gold answers (1-5 words) and at least one qrels row;
  every unanswerable one has no answers and no qrels rows;
- qrels/test.tsv has the BEIR header and points at documents that exist;
- every gold answer appears (case-insensitive, whitespace-normalised) in a referenced document,
  and every referenced document contains at least one gold answer;
- every row of answers.jsonl has a split (dev or test), each split holds 40-60% of all
  questions and of the unanswerable ones, and the optional style is one of STYLES (near-miss and
  off-topic only on unanswerable questions, the other styles only on answerable ones);
- the counts promised in the README are met (questions, unanswerable questions, documents,
  formats, words);
- the facts the corpus states only once appear in exactly one document, and the deliberately
  absent topics appear in none.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent.parent / "docs_corpus"

MIN_QUESTIONS = 250
MIN_IMPOSSIBLE = 75
MIN_DOCS = 42
MIN_WORDS = 32_000
MIN_PER_FORMAT = {".txt": 4, ".html": 4, ".pdf": 2}
MAX_ANSWER_WORDS = 5
SPLITS = ("dev", "test")
SPLIT_SHARE = (0.4, 0.6)  # each split's share of all questions and of the unanswerable ones
ANSWERABLE_STYLES = {"keyword", "paraphrase", "natural", "table", "two-sentence"}
IMPOSSIBLE_STYLES = {"near-miss", "off-topic"}
STYLES = ANSWERABLE_STYLES | IMPOSSIBLE_STYLES
ANSWER_KEYS = {"_id", "answers", "is_impossible", "split", "style"}

# Facts stated in exactly one document (document, exact phrase). Keep in sync with the README.
ONCE_ONLY: list[tuple[str, str]] = [
    ("runbooks/payments-gateway.md", "for 36 hours"),
    ("runbooks/payments-gateway.md", "04:30 UTC"),
    ("runbooks/payments-gateway.md", "KL-448120"),
    ("security/security-and-access-policy.md", "U-3.14"),
    ("policies/expense-and-travel-policy.pdf", "EUR 75"),
    ("policies/expense-and-travel-policy.pdf", "EUR 900"),
    ("engineering/release-process.md", "25 minutes"),
    ("product/product-faq.md", "15 MB"),
    ("policies/data-retention-policy.md", "45 days"),
    ("onboarding/engineering-onboarding.md", "Sunday at 03:00 UTC"),
    ("hr/employee-handbook.md", "bereavement"),
    ("hr/employee-handbook.md", "Femke de Wit"),
    ("hr/parental-leave-guide.pdf", "room 1.12"),
    ("runbooks/notify-service.md", "120 emails per second"),
    ("runbooks/ledger-api.md", "four workers"),
]

# Topics no document may mention (regular expressions, case-insensitive).
ABSENT: list[str] = [
    r"stock option",
    r"\bequity\b",
    r"\besop\b",
    r"revenue",
    r"cafeteria",
    r"canteen",
    r"\bmenu\b",
    r"\bpets?\b",
    r"\bdogs?\b",
    r"salar(y|ies)",
    r"\bdental\b",
    r"parking",
    r"\bgym\b",
    r"fitness",
    r"pension",
    r"wi-?fi",
    r"sabbatical",
    r"lease car",
    r"company car\b",
    r"party",
    r"bug bounty",
    r"referral",
    r"investor",
    r"funding",
    r"board of directors",
    r"mobile app",
    r"\biphone\b",
    r"android",
    r"kubernetes version",
    r"story points?",
    r"\bsprints?\b",
    r"<script",
]


class _TextExtractor(HTMLParser):
    """Collect the visible text of an HTML page, skipping <script> and <style>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def doc_text(path: Path) -> str:
    """Return the plain text of a corpus document, whitespace-normalised."""
    if path.suffix == ".pdf":
        from pypdf import PdfReader

        text = "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    elif path.suffix in (".html", ".htm"):
        parser = _TextExtractor()
        parser.feed(path.read_text(encoding="utf-8"))
        text = " ".join(parser.parts)
    else:
        text = path.read_text(encoding="utf-8")
    return " ".join(text.split())


def norm(text: str) -> str:
    """Lower-case and collapse whitespace, for containment checks."""
    return " ".join(text.split()).lower()


def load_jsonl(path: Path) -> list[dict[str, object]]:
    """Read a JSON Lines file into a list of objects."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def corpus_docs() -> dict[str, Path]:
    """Map corpus-id (POSIX path relative to docs_corpus/) to file, README excluded."""
    return {
        p.relative_to(CORPUS).as_posix(): p
        for p in sorted(CORPUS.rglob("*"))
        if p.is_file() and p.relative_to(CORPUS).as_posix() != "README.md"
    }


def check() -> list[str]:
    """Run every check and return the list of problems found (empty when all is well)."""
    problems: list[str] = []
    docs = corpus_docs()
    texts = {cid: doc_text(path) for cid, path in docs.items()}
    lowered = {cid: text.lower() for cid, text in texts.items()}

    # Corpus counts.
    if len(docs) < MIN_DOCS:
        problems.append(f"corpus has {len(docs)} documents, need at least {MIN_DOCS}")
    words = sum(len(text.split()) for text in texts.values())
    if words < MIN_WORDS:
        problems.append(f"corpus has {words} words, need at least {MIN_WORDS}")
    for suffix, minimum in MIN_PER_FORMAT.items():
        count = sum(1 for cid in docs if cid.endswith(suffix))
        if count < minimum:
            problems.append(f"corpus has {count} {suffix} documents, need at least {minimum}")
    if not (CORPUS / "README.md").is_file():
        problems.append("docs_corpus/README.md is missing")

    for cid, phrase in ONCE_ONLY:
        found = sorted(c for c, text in lowered.items() if phrase.lower() in text)
        if found != [cid]:
            problems.append(f"once-only fact {phrase!r} should be only in {cid}, found in {found}")
    for pattern in ABSENT:
        found = sorted(c for c, text in texts.items() if re.search(pattern, text, re.IGNORECASE))
        if found:
            problems.append(f"absent topic /{pattern}/ is mentioned in {found}")

    # QA files.
    queries = load_jsonl(HERE / "queries.jsonl")
    answers = load_jsonl(HERE / "answers.jsonl")
    query_ids = [str(q.get("_id")) for q in queries]
    answer_ids = [str(a.get("_id")) for a in answers]
    expected = [f"q{n:03d}" for n in range(1, len(queries) + 1)]
    if query_ids != expected:
        problems.append("queries.jsonl ids must be q001, q002, ... without gaps or duplicates")
    if answer_ids != query_ids:
        problems.append("answers.jsonl ids differ from queries.jsonl ids (or their order)")
    for q in queries:
        if set(q) != {"_id", "text"} or not str(q.get("text", "")).strip():
            problems.append(f"{q.get('_id')}: query needs exactly the keys _id and text")

    qrels: dict[str, list[str]] = {}
    with (HERE / "qrels" / "test.tsv").open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header != ["query-id", "corpus-id", "score"]:
            problems.append(f"qrels header is {header}, expected query-id, corpus-id, score")
        for row in reader:
            if len(row) != 3 or not row[2].isdigit():
                problems.append(f"bad qrels row {row}")
                continue
            qid, cid, _score = row
            if qid not in query_ids:
                problems.append(f"qrels row for unknown query {qid}")
            if cid not in docs:
                problems.append(f"qrels row {qid} points at missing document {cid}")
            qrels.setdefault(qid, []).append(cid)

    impossible = 0
    splits: dict[str, list[bool]] = {split: [] for split in SPLITS}
    for a in answers:
        qid = str(a.get("_id"))
        gold = a.get("answers")
        flag = a.get("is_impossible")
        extra = set(a) - ANSWER_KEYS
        if extra:
            problems.append(f"{qid}: unknown keys {sorted(extra)} (allowed: {sorted(ANSWER_KEYS)})")
        split = a.get("split")
        if split not in SPLITS:
            problems.append(f"{qid}: split is {split!r}, expected one of {', '.join(SPLITS)}")
        if not isinstance(gold, list) or not isinstance(flag, bool):
            problems.append(f"{qid}: answers must be a list and is_impossible a bool")
            continue
        if split in SPLITS:
            splits[str(split)].append(flag)
        if "style" in a:
            style = a["style"]
            allowed = IMPOSSIBLE_STYLES if flag else ANSWERABLE_STYLES
            if style not in allowed:
                kind = "unanswerable" if flag else "answerable"
                problems.append(
                    f"{qid}: style {style!r} is not allowed for an {kind} question "
                    f"(use one of {', '.join(sorted(allowed))})"
                )
        if flag:
            impossible += 1
            if gold:
                problems.append(f"{qid}: unanswerable question must have no answers")
            if qid in qrels:
                problems.append(f"{qid}: unanswerable question must have no qrels rows")
            continue
        refs = [cid for cid in qrels.get(qid, []) if cid in docs]
        if not refs:
            problems.append(f"{qid}: answerable question has no qrels row")
        if not 1 <= len(gold) <= 3:
            problems.append(f"{qid}: give 1-3 gold answers, got {len(gold)}")
        for answer in gold:
            if not isinstance(answer, str) or not 1 <= len(answer.split()) <= MAX_ANSWER_WORDS:
                problems.append(f"{qid}: gold answer {answer!r} must be 1-{MAX_ANSWER_WORDS} words")
                continue
            if refs and not any(norm(answer) in lowered[cid] for cid in refs):
                problems.append(f"{qid}: gold answer {answer!r} not found in {refs}")
        for cid in refs:
            if not any(isinstance(ans, str) and norm(ans) in lowered[cid] for ans in gold):
                problems.append(f"{qid}: referenced document {cid} contains no gold answer")

    if len(queries) < MIN_QUESTIONS:
        problems.append(f"{len(queries)} questions, need at least {MIN_QUESTIONS}")
    if impossible < MIN_IMPOSSIBLE:
        problems.append(f"{impossible} unanswerable questions, need at least {MIN_IMPOSSIBLE}")
    low, high = SPLIT_SHARE
    for split, flags in splits.items():
        for label, count, total in (
            ("questions", len(flags), len(answers)),
            ("unanswerable questions", sum(flags), impossible),
        ):
            if total and not low <= count / total <= high:
                problems.append(
                    f"split {split} holds {count} of {total} {label} ({count / total:.0%}), "
                    f"need {low:.0%}-{high:.0%}: move rows between dev and test"
                )

    split_counts = ", ".join(
        f"{split}: {len(flags)} ({sum(flags)} unanswerable)" for split, flags in splits.items()
    )
    print(
        f"corpus: {len(docs)} documents, {words} words; "
        f"QA: {len(queries)} questions, {len(queries) - impossible} answerable, "
        f"{impossible} unanswerable, {sum(len(v) for v in qrels.values())} qrels rows; "
        f"{split_counts}"
    )
    return problems


def main() -> int:
    """Print problems and return the exit status."""
    problems = check()
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems:
        print("OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
