"""Chat settings saved with a thread, mapped back to question options when it is resumed.

``options_from_settings`` rebuilds a session's question options from the chat settings a
resumed thread saved, so the thread continues with the settings it had.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rag.assistant import AskOptions
from rag.config import MODES, RETRIEVER_NAMES, STRATEGIES
from rag.history import json_or

DEMO_SEED = 42

SETTINGS_KEY = (
    "rag_settings"  # where webui/answer.py records the settings panel's values on each answer
)


def settings_from_thread(thread: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a resumed thread continues with: those of its last answer.

    Each answer's step metadata records the settings panel's values it was asked with. Chainlit
    also saves the session's settings in the thread's metadata, but only when the browser
    disconnects, which can land after a reload has already resumed the thread (and a resumed
    session then saves its own values over them); the answers' record has no such race.
    """
    for step in reversed(list(thread.get("steps") or [])):
        meta = json_or(step.get("metadata"), dict) if isinstance(step, Mapping) else None
        if isinstance(meta, dict) and isinstance(meta.get(SETTINGS_KEY), dict):
            return dict(meta[SETTINGS_KEY])
    meta = json_or(thread.get("metadata"), dict)
    saved = meta.get("chat_settings") if isinstance(meta, dict) else None
    return dict(saved) if isinstance(saved, dict) else {}


def _number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _choice(value: Any, choices: tuple[str, ...]) -> Any:
    return value if isinstance(value, str) and value in choices else None


def options_from_settings(
    settings: Mapping[str, Any] | None,
    *,
    retrievers: tuple[str, ...] = RETRIEVER_NAMES,
    default_mode: str | None = None,
) -> AskOptions:
    """AskOptions from the chat settings panel's values (fresh or saved with a thread).

    Unknown or malformed values are dropped (rag.yaml's defaults apply), so an old thread saved
    by another version never stops a resumed chat.
    """
    s = settings or {}
    demo = s.get("demo") is True
    top_k = _number(s.get("top_k"))
    min_chars = _number(s.get("min_draft_chars"))
    weak = _number(s.get("weak_context"))
    temperature = _number(s.get("temperature"))
    mode = _choice(s.get("mode"), MODES) or _choice(default_mode, MODES)
    return AskOptions(
        retriever=_choice(s.get("retriever"), retrievers),
        top_k=int(top_k) if top_k is not None and top_k >= 1 else None,
        mode=mode,
        strategy=_choice(s.get("strategy"), STRATEGIES),
        temperature=0.0 if demo else temperature,
        seed=DEMO_SEED if demo else None,
        min_draft_chars=int(min_chars) if min_chars is not None and min_chars >= 0 else None,
        weak_context=weak if weak is not None and weak >= 0 else None,
    )
