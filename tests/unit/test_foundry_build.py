"""The Foundry Local conversion's bookkeeping and the service's id matching (no SDK needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.errors import ModelError
from rag.models import foundry_build
from rag.models.foundry import pick_served_id
from rag.models.foundry_build import (
    RECIPE,
    STAMP,
    build_foundry,
    convert_gguf,
    converted_models,
    is_converted,
)


def _converted(folder: Path, sha: str = "abc", recipe: int = RECIPE) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"x" * 10)
    (folder / "genai_config.json").write_text("{}")
    files = {"model.onnx": 10, "genai_config.json": 2}
    stamp = {"recipe": recipe, "source_sha256": sha, "files": files}
    (folder / STAMP).write_text(json.dumps(stamp))
    return folder


def test_a_finished_conversion_is_recognised(tmp_path: Path) -> None:
    folder = _converted(tmp_path / "models" / "foundry" / "m")
    assert is_converted(folder) and is_converted(folder, "abc")
    assert not is_converted(folder, "other-source")
    assert converted_models(tmp_path) == {"m": folder}


@pytest.mark.parametrize("damage", ["no stamp", "old recipe", "truncated", "missing file"])
def test_partial_or_stale_output_is_not_trusted(tmp_path: Path, damage: str) -> None:
    folder = _converted(tmp_path / "m", recipe=RECIPE - 1 if damage == "old recipe" else RECIPE)
    if damage == "no stamp":
        (folder / STAMP).unlink()
    elif damage == "truncated":
        (folder / "model.onnx").write_bytes(b"x")
    elif damage == "missing file":
        (folder / "genai_config.json").unlink()
    assert not is_converted(folder)


def test_temp_folders_are_not_models(tmp_path: Path) -> None:
    _converted(tmp_path / "models" / "foundry" / ".m.abc.tmp")
    assert converted_models(tmp_path) == {}


def test_up_to_date_conversion_is_skipped(tmp_path: Path) -> None:
    folder = _converted(tmp_path / "m")
    said: list[str] = []
    out = convert_gguf("m", tmp_path / "none.gguf", "abc", tmp_path, said.append)
    assert out == {"path": str(folder), "status": "up to date"} and "up to date" in said[0]


def test_missing_extra_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(foundry_build.BUILD_MODULES, "no_such_module_for_rag", "gguf-tools")
    with pytest.raises(
        ModelError, match=r"needs (.*, )?gguf-tools; install the `foundry` extra"
    ) as e:
        convert_gguf("m", tmp_path / "m.gguf", "abc", tmp_path / "out", print)
    assert e.value.kind == "missing_extra"


def test_unknown_model_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no shipped model named 'nope'; choose from .*smollm2"):
        build_foundry(tmp_path, ["nope"])


@pytest.mark.parametrize(
    ("alias", "served", "candidates", "expected"),
    [
        (
            "phi-4-mini",
            ["Phi-4-mini-instruct-generic-cpu:4"],
            (),
            "Phi-4-mini-instruct-generic-cpu:4",
        ),
        ("phi-4-mini", ["phi-4-mini"], (), "phi-4-mini"),
        ("phi-4-mini", ["a:1", "phi-4-mini-gpu:2"], ("phi-4-mini-gpu:2",), "phi-4-mini-gpu:2"),
        ("phi-4", ["Phi-4-mini-instruct-generic-cpu:4"], (), None),
        ("gpt-oss-20b", ["gpt-oss-20b-cuda-gpu:1"], (), "gpt-oss-20b-cuda-gpu:1"),
        (
            "qwen2.5-0.5b",
            ["qwen2.5-0.5b-instruct-generic-cpu:3"],
            (),
            "qwen2.5-0.5b-instruct-generic-cpu:3",
        ),
        ("gpt-oss-20b", [], (), None),
    ],
)
def test_alias_to_served_id(
    alias: str, served: list[str], candidates: tuple[str, ...], expected: str | None
) -> None:
    assert pick_served_id(alias, served, candidates) == expected
