"""`rag models build --foundry`: the shipped GGUF chat models converted for Foundry Local.

Foundry Local runs ONNX Runtime GenAI models. A GGUF becomes one offline in two steps:
transformers de-quantizes it (its GGUF loader) into a float32 Hugging Face folder, then
``onnxruntime_genai.models.builder`` writes an int4 CPU model with ``genai_config.json``.
The result lands in ``<data_dir>/models/foundry/<name>``; a stamp file records the source
checksum and the recipe, so a finished conversion is skipped and a partial one is redone.
Each conversion is built in a temp folder beside its destination and renamed into place.
These tools come with the ``foundry`` extra and are imported only while converting.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rag.errors import ModelError
from rag.models.artifacts.files import swap_dir

Progress = Callable[[str], None]

FOUNDRY_DIRNAME = "foundry"
STAMP = "rag-foundry.json"
# Bump when the conversion steps change: older conversions are then redone.
RECIPE = 2
EXTRA_FIX = "install the `foundry` extra: `pip install -e '.[foundry]'` (or `make install`)"
# What the conversion imports: module name -> the package that provides it.
BUILD_MODULES: dict[str, str] = {
    "torch": "torch",
    "transformers": "transformers",
    "gguf": "gguf",
    "accelerate": "accelerate",
    "onnx_ir": "onnx-ir",
    "onnxruntime_genai": "onnxruntime-genai",
}
REQUIRED_FILES = ("genai_config.json", "model.onnx", "tokenizer.json")


def foundry_models_dir(data_dir: Path) -> Path:
    """Where converted models live: ``<data_dir>/models/foundry``."""
    return data_dir / "models" / FOUNDRY_DIRNAME


def missing_build_modules() -> list[str]:
    """Packages of the `foundry` extra that the conversion needs and cannot import."""
    return [pkg for mod, pkg in BUILD_MODULES.items() if importlib.util.find_spec(mod) is None]


def _read_stamp(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_converted(folder: Path, source_sha256: str | None = None) -> bool:
    """True when ``folder`` holds a finished conversion (of ``source_sha256``, when given)."""
    stamp = _read_stamp(folder)
    if stamp.get("recipe") != RECIPE:
        return False
    if source_sha256 is not None and stamp.get("source_sha256") != source_sha256:
        return False
    files = stamp.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, size in files.items():
        try:
            if (folder / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def converted_models(data_dir: Path) -> dict[str, Path]:
    """Every finished conversion under ``<data_dir>/models/foundry``, by model name."""
    root = foundry_models_dir(data_dir)
    if not root.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".") and is_converted(p)
    }


def _dequantize(gguf: Path, out: Path) -> None:
    """GGUF -> float32 Hugging Face folder (config, safetensors, tokenizer, chat template)."""
    import transformers

    hf: Any = transformers  # partly untyped; two calls are made
    tokenizer = hf.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = hf.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype="float32"
    )
    # The weights are already float32 here; the GGUF quantizer only blocks save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    _fix_byte_level_tokenizer(out)


def _fix_byte_level_tokenizer(folder: Path) -> None:
    """Undo two artefacts of transformers 4.x's GGUF tokenizer conversion for byte-level BPE.

    It wraps the ByteLevel decoder in SentencePiece steps (ORT GenAI then prints "Ġ" for spaces)
    and prepends a BOS to every text (the chat template already starts with its own token).
    """
    path = folder / "tokenizer.json"
    tok = json.loads(path.read_text(encoding="utf-8"))
    if (tok.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
        return
    decoder = tok.get("decoder") or {}
    if decoder.get("type") == "Sequence":
        levels = [d for d in decoder.get("decoders", []) if d.get("type") == "ByteLevel"]
        if levels:
            tok["decoder"] = levels[0]
    post = tok.get("post_processor") or {}
    if post.get("type") == "TemplateProcessing":
        for key in ("single", "pair"):
            post[key] = [p for p in post.get(key, []) if "SpecialToken" not in p]
        post["special_tokens"] = {}
    path.write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("add_bos_token"):
        config["add_bos_token"] = False
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def _build_genai(hf_dir: Path, out: Path, cache: Path, log: Path) -> None:
    """Float32 HF folder -> ORT GenAI int4 CPU model, in a child process (its output to ``log``)."""
    cmd = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(hf_dir), "-o", str(out), "-p", "int4", "-e", "cpu", "-c", str(cache),
    ]  # fmt: skip
    with log.open("w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
        raise ModelError(
            f"onnxruntime_genai's model builder failed (exit {proc.returncode}):\n{tail}",
            kind="build_failed",
        )


def convert_gguf(
    name: str, gguf: Path, source_sha256: str, folder: Path, progress: Progress = print
) -> dict[str, Any]:
    """Convert ``gguf`` into ``folder/name`` unless a finished conversion of it is there."""
    dest = folder / name
    if is_converted(dest, source_sha256):
        progress(f"{name}: Foundry Local model up to date ({dest})")
        return {"path": str(dest), "status": "up to date"}
    missing = missing_build_modules()
    if missing:
        raise ModelError(
            f"converting {name} for Foundry Local needs {', '.join(missing)}; {EXTRA_FIX}",
            kind="missing_extra",
        )
    if dest.exists():
        progress(f"{name}: {dest} is incomplete or from another source; converting again")
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}.", suffix=".tmp"))
    try:
        hf_dir, out = work / "hf", work / name
        progress(f"{name}: 1/2 de-quantizing {gguf.name} with transformers")
        _dequantize(gguf, hf_dir)
        took = time.perf_counter() - t0
        progress(f"{name}: 2/2 building the int4 ONNX Runtime GenAI model ({took:.0f} s so far)")
        _build_genai(hf_dir, out, work / "cache", work / "builder.log")
        missing_files = [f for f in REQUIRED_FILES if not (out / f).is_file()]
        if missing_files:
            raise ModelError(
                f"the model builder wrote no {', '.join(missing_files)} for {name}; "
                f"see {work / 'builder.log'}",
                kind="build_failed",
            )
        files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
        stamp = {
            "name": name,
            "recipe": RECIPE,
            "source": str(gguf),
            "source_sha256": source_sha256,
            "files": files,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (out / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        swap_dir(out, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size_mb = sum(p.stat().st_size for p in dest.iterdir()) / 1e6
    seconds = time.perf_counter() - t0
    progress(f"{name}: Foundry Local model ready in {seconds:.0f} s, {size_mb:.0f} MB ({dest})")
    return {"path": str(dest), "status": "built", "seconds": round(seconds, 1)}


def build_foundry(
    data_dir: Path, names: Sequence[str] | None = None, progress: Progress = print
) -> dict[str, Any]:
    """Convert the named shipped GGUF models (default: SmolLM2) for Foundry Local."""
    from rag.models.artifacts import (
        GGUF_NAMES,
        GGUF_SPECS,
        SMOLLM2,
        SMOLLM2_NAME,
        gguf_path,
        smollm2_path,
    )

    chosen = list(names or [SMOLLM2_NAME])
    unknown = [n for n in chosen if n not in GGUF_NAMES]
    if unknown:
        raise ModelError(
            f"no shipped model named {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(GGUF_NAMES)}",
            kind="unknown_model",
        )
    folder = foundry_models_dir(data_dir)
    summary: dict[str, Any] = {}
    for name in chosen:
        if name == SMOLLM2_NAME:  # used in place from its hash-pinned package
            gguf, sha = smollm2_path(), SMOLLM2.sha256
        else:
            gguf, sha = gguf_path(name, data_dir), GGUF_SPECS[name].sha256
        summary[name] = convert_gguf(name, gguf, sha, folder, progress)
    return summary
