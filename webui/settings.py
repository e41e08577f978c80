"""Chat profiles and the settings panel; every list of choices comes from rag.config's Literals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import chainlit as cl
from chainlit.input_widget import Select, Slider, Switch

from rag.config import MODES, RETRIEVER_NAMES, STRATEGIES, Config, Mode

RETRIEVERS: list[str] = list(RETRIEVER_NAMES)
MODE_CHOICES: list[str] = list(MODES)
STRATEGY_CHOICES: list[str] = list(STRATEGIES)

PROFILES: dict[str, tuple[Mode, str]] = {  # chat profile -> escalation mode
    "Cascade": ("auto", "The small model drafts; the large one is asked when needed."),
    "Small model only": ("never", "Every answer from the small model."),
    "Large model only": ("always", "Every answer from the large model."),
    "Compare": ("compare", "Both models answer the same question, side by side."),
}


def chat_profiles() -> list[cl.ChatProfile]:
    """One chat profile per escalation mode."""
    return [
        cl.ChatProfile(name=name, markdown_description=desc)
        for name, (_m, desc) in PROFILES.items()
    ]


def profile_mode(cfg: Config, profile: Any) -> Mode:
    """The escalation mode of the chosen chat profile, else rag.yaml's."""
    return PROFILES[profile][0] if profile in PROFILES else cfg.escalation.mode


def _index_of(values: list[str], value: Any, default: str) -> int:
    return values.index(value if value in values else default)


def settings_panel(cfg: Config, saved: Mapping[str, Any], mode: str) -> cl.ChatSettings:
    """The settings panel, showing `saved` values (a resumed thread's) over rag.yaml's."""
    esc = cfg.escalation

    def num(key: str, default: float) -> float:
        value = saved.get(key)
        return (
            float(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else default
        )

    return cl.ChatSettings(
        [
            Select(id="retriever", label="Retriever", values=RETRIEVERS,
                   initial_index=_index_of(RETRIEVERS, saved.get("retriever"), cfg.retrieval.retriever)),
            Slider(id="top_k", label="Passages (top k)", initial=num("top_k", cfg.retrieval.top_k),
                   min=1, max=20, step=1),
            Select(id="mode", label="Escalation mode", values=MODE_CHOICES,
                   initial_index=_index_of(MODE_CHOICES, saved.get("mode"), mode)),
            Select(id="strategy", label="When escalating", values=STRATEGY_CHOICES,
                   initial_index=_index_of(STRATEGY_CHOICES, saved.get("strategy"), esc.strategy)),
            Slider(id="min_draft_chars", label="Short-draft threshold (characters)",
                   initial=num("min_draft_chars", esc.min_draft_chars), min=0, max=400, step=10),
            Slider(id="weak_context", label="Weak-context threshold (score of the retriever in use; -1 = rag.yaml)",
                   initial=num("weak_context", -1), min=-1, max=20, step=0.05),
            Slider(id="temperature", label="Temperature",
                   initial=num("temperature", cfg.models.slm.temperature), min=0, max=1.5, step=0.05),
            Switch(id="demo", label="Demo mode (temperature 0, fixed seed)",
                   initial=saved.get("demo") is True),
        ]
    )  # fmt: skip
