"""Does the installed llama.cpp run on this CPU? One short completion in a child process.

llama.cpp compiled with ``-march=native`` on a CPU that reports AMX multiplies quantised
matrices with AMX tiles. A virtual machine that does not hand its guest the AMX state faults on
the first such product (``ldtilecfg``: a general protection fault, SIGSEGV), so the embedded
server starts, says it is ready and dies at the first question of a few tokens — measured on
this project's 2-core machines, where the chat showed only "the connection broke". The Makefile
builds a portable wheel instead (x86-64-v3: AVX2, FMA, F16C; see ``LLAMA_CMAKE_ARGS``); this
check catches any other build that cannot run here before `make run` serves a chat that
cannot answer. It runs the tiny test model on a prompt of a few dozen tokens (a batch, so the
matrix kernels run) once per llama.cpp build, keyed by its libraries' sizes and times.
"""

from __future__ import annotations

import hashlib
import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

from rag.errors import ModelError
from rag.models.artifacts.files import Progress, read_json, write_json_atomic

STAMP = "llama-runs.json"
TIMEOUT_S = 120.0
REBUILD_FIX = (
    "rebuild it for this CPU: `make llama-rebuild` (a portable AVX2 build, ~11 min on 2 cores)"
)
# A prompt of ~60 tokens: one token alone takes the vector path, a batch the matrix kernels.
_CHECK = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, verbose=False)
out = llm("The quick brown fox jumps over the lazy dog, then runs into the woods. " * 4,
          max_tokens=1, temperature=0.0)
print(out["usage"]["prompt_tokens"])
"""


def llama_build_key() -> str | None:
    """A fingerprint of the installed llama.cpp libraries (name, size, mtime); None if absent."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    lib = Path(spec.origin).parent / "lib"
    files = sorted(p for p in lib.glob("*.so*") if p.is_file()) if lib.is_dir() else []
    digest = hashlib.sha256()
    for p in files:
        st = p.stat()
        digest.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest() if files else None


def check_llama_runs(model: Path, folder: Path, progress: Progress = print) -> str:
    """Run ``model`` on a short batch in a child process, once per llama.cpp build.

    Returns "verified" or "verified earlier"; raises ModelError naming the signal and the fix
    when the child dies, and "not installed" when llama-cpp-python is not there.
    """
    key = llama_build_key()
    if key is None:
        return "not installed"
    stamp = folder / STAMP
    if read_json(stamp).get("build") == key:
        return "verified earlier"
    progress(f"checking that llama.cpp runs on this CPU ({model.name}, one short batch)…")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHECK, str(model)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelError(
            f"llama.cpp did not answer one short prompt with {model.name} in {TIMEOUT_S:.0f} s",
            kind="start",
        ) from exc
    if proc.returncode != 0:
        raise ModelError(failure_message(proc.returncode, proc.stderr, model), kind="start")
    write_json_atomic(stamp, {"build": key, "model": model.name})
    return "verified"


def failure_message(returncode: int, stderr: str, model: Path) -> str:
    """What the user reads when the check's child failed: how it died, its last words, the fix."""
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
        what = (
            f"llama.cpp crashed on this CPU: a one-token answer with {model.name} {how}. The "
            "installed llama-cpp-python uses instructions this machine cannot run (AMX tiles "
            "in a VM that does not enable them, for one); "
        )
    else:
        what = f"llama.cpp failed a one-token answer with {model.name} (exit code {returncode}); "
    tail = "\n".join(stderr.strip().splitlines()[-5:])
    return what + REBUILD_FIX + (f"\n{tail}" if tail else "")
