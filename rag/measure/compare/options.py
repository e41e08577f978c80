"""What `rag compare` measures: its options, checked where they enter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rag.errors import ConfigError


@dataclass(frozen=True)
class CompareOptions:
    """What `rag compare` measures; the CLI fills it from its flags."""

    data: Path = Path("eval/docs_qa")
    limit: int = 10
    split: Literal["dev", "test", "all"] = "test"
    cold: bool = False
    rounds: int = 1  # warm short prompts per model: rounds x 2 prompts (0: none)
    max_tokens: int = 128  # for the warm short prompts
    judge: bool = True
    escalation_rate: float | None = None  # None: measured by an `auto` run on the same questions
    cost_profile: str | None = None  # None: every profile in costs.profiles
    volume_per_day: int | None = None  # None: costs.volume_per_day
    log_dir: Path | None = None  # llama.cpp logs of servers started by --cold

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ConfigError(f"--limit must be at least 1. Currently, it is {self.limit}")
        if self.escalation_rate is not None and not 0 <= self.escalation_rate <= 1:
            raise ConfigError(
                f"--escalation-rate must be between 0 and 1 (a share, 0.3 = 30%). "
                f"Currently, it is {self.escalation_rate}"
            )
