"""Shared fixtures: the fake OpenAI server, ports, paths, the network guard, browser screenshots."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.measure.fake_openai import FakeOpenAI
from rag.measure.fake_openai import free_port as _free_port

# Set before anything imports huggingface_hub/transformers: tests never download models.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT_DIR = REPO_ROOT / "artifacts" / "screenshots"


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI on a free loopback port; `fake_openai.base_url` ends in /v1."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port that was free when the test started."""
    return _free_port()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding pyproject.toml)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data(repo_root: Path) -> Path:
    """The SciFact benchmark folder in ../shared/data; skips the test when it is absent."""
    path = repo_root.parent / "shared" / "data" / "scifact"
    if not path.is_dir():
        pytest.skip(f"shared SciFact data not found at {path}")
    return path


# -- network guard ----------------------------------------------------------------------------


class NetworkBlockedError(RuntimeError):
    """A test tried to reach a host that is not loopback."""


def is_loopback_host(host: object) -> bool:
    """True for localhost, 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for anything else."""
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False  # any other hostname needs DNS and the network
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class NetworkGuard:
    """Records and refuses connections to non-loopback addresses while a test runs.

    Code under test may swallow the error (clients retry and wrap it), so the fixture also fails
    the test at teardown when `blocked` is not empty. A test that provokes a blocked connection
    on purpose clears `blocked` afterwards.
    """

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def check(self, family: int, address: Any) -> None:
        """Raise NetworkBlockedError for an INET/INET6 address that is not loopback."""
        if family not in (socket.AF_INET, socket.AF_INET6):
            return  # AF_UNIX sockets, netlink etc. stay on this machine
        host = address[0] if isinstance(address, tuple) and address else address
        if not is_loopback_host(host):
            self.blocked.append(repr(address))
            raise NetworkBlockedError(
                f"test tried to connect to {address!r}; tests may only reach 127.0.0.0/8, ::1 "
                "or localhost. Serve the dependency locally (e.g. the fake_openai fixture)."
            )


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """Fail any test that opens a non-loopback connection (like Haystack's request blocker)."""
    guard = NetworkGuard()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_create_connection = socket.create_connection

    def connect(self: socket.socket, address: Any) -> None:
        guard.check(self.family, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        guard.check(self.family, address)
        return real_connect_ex(self, address)

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        # Checked before name resolution, so a stray hostname never reaches DNS.
        guard.check(socket.AF_INET, address)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield guard
    if guard.blocked:
        pytest.fail(f"test tried to open non-loopback connection(s): {', '.join(guard.blocked)}")


# -- browser screenshots ----------------------------------------------------------------------


def screenshot_path(test_name: str) -> Path:
    """Where a failing browser test's screenshot goes: artifacts/screenshots/<test name>.png."""
    return SCREENSHOT_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', test_name).strip('_')}.png"


def _ensure_artifacts_dir() -> None:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    ignore = SCREENSHOT_DIR.parent / ".gitignore"
    if not ignore.exists():  # keep run output out of git even without a root .gitignore entry
        ignore.write_text("*\n", encoding="utf-8")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Save the Playwright `page` of a failing `browser` test before its fixtures close."""
    report = yield
    if report.when in ("setup", "call") and report.failed and item.get_closest_marker("browser"):
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        page = funcargs.get("page")
        screenshot: Callable[..., Any] | None = getattr(page, "screenshot", None)
        if screenshot is not None:
            path = screenshot_path(item.name)
            try:
                _ensure_artifacts_dir()
                screenshot(path=str(path), full_page=True, timeout=10_000)
                report.sections.append(("browser screenshot", f"saved to {path}"))
            except Exception as exc:  # the page may be gone; never hide the real failure
                report.sections.append(("browser screenshot", f"could not be saved: {exc!r}"))
    return report
