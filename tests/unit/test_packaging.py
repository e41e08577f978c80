"""The installed app needs no extra: the load client's libraries are only the `load` extra's."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

BLOCK_LOAD_CLIENT = """
import sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("socketio", "httpx"):
            raise ImportError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Blocked())
from rag.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_cli(repo_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_LOAD_CLIENT, *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rag_help_works_without_the_load_extra(repo_root: Path) -> None:
    done = run_cli(repo_root, "--help")
    assert done.returncode == 0, done.stderr
    assert "bench" in done.stdout


def test_bench_load_without_the_extra_names_it(repo_root: Path) -> None:
    done = run_cli(repo_root, "bench", "load", "--sessions", "1")
    assert done.returncode == 1
    assert "needs socketio" in done.stderr or "needs httpx" in done.stderr
    assert "'.[load]'" in done.stderr


def test_runtime_dependencies_leave_the_load_client_to_its_extra(repo_root: Path) -> None:
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    assert "socketio" not in runtime and "httpx" not in runtime
    assert any("socketio" in d for d in project["optional-dependencies"]["load"])


def test_only_the_load_benches_import_the_load_client(repo_root: Path) -> None:
    importers = set()
    for path in [*(repo_root / "rag").rglob("*.py"), *(repo_root / "webui").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] in ("socketio", "httpx") for n in names):
                importers.add(path.relative_to(repo_root).as_posix())
    assert importers == {  # the load extra's benches
        "rag/measure/load/__init__.py",
        "rag/measure/load/client.py",
        "rag/measure/load/servers.py",
        "rag/measure/soak.py",
    }
