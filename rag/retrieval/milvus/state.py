"""The index folder's record of a Milvus index: where the collection is, and its fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from rag.errors import IndexError_

STATE_FILE = "milvus.json"


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Write milvus.json into ``folder``."""
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")


def read_state(folder: Path) -> dict[str, Any]:
    """milvus.json of ``folder``; IndexError_ (a rebuild) if it is missing or unreadable."""
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexError_(
            f"Milvus index state in {folder} is missing or unreadable ({exc}); "
            "run `rag index` to rebuild it"
        ) from None
    return state if isinstance(state, dict) else {}


def fingerprint_diff(found: str | None, wanted: dict[str, str]) -> str:
    """The fingerprint keys that differ, as ``key: old → new``."""
    try:
        old = cast(dict[str, str], json.loads(found)) if found else {}
    except ValueError:
        old = {}
    if not isinstance(old, dict) or not old:
        return "no fingerprint recorded"
    keys = sorted(k for k in set(old) | set(wanted) if old.get(k) != wanted.get(k))
    return "; ".join(f"{k}: {old.get(k)} → {wanted.get(k)}" for k in keys) or "same settings"
