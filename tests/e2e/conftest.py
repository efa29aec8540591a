"""Browser tests: a real movierec server (uvicorn subprocess, SQLite, a published model) driven by
Debian's Chromium through Playwright.

Chromium is ``MOVIEREC_E2E_CHROMIUM`` when set, else ``/usr/bin/chromium``, else ``chromium`` on
PATH. Without it (or without the ``playwright`` package) every test here is *skipped* with the
reason; CI installs ``chromium`` so they run there. ``playwright install`` is never needed: the
system browser is launched through ``executable_path``.

Screenshots go to ``test-artifacts/e2e/`` (git-ignored; ``MOVIEREC_E2E_ARTIFACTS`` overrides).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from migrations import upgrade

from . import catalogue

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("MOVIEREC_E2E_ARTIFACTS", REPO_ROOT / "test-artifacts" / "e2e"))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
API_KEY = "e2e-secret-key"


def chromium_path() -> str | None:
    """The system Chromium to drive, or None when it is not installed."""
    explicit = os.environ.get("MOVIEREC_E2E_CHROMIUM")
    candidates = [explicit] if explicit else ["/usr/bin/chromium", shutil.which("chromium")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running uvicorn serving ``app.main:create_app`` on ``url``."""

    url: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def start_server(workdir: Path, db_url: str, store: Path, name: str, extra_env: dict[str, str] | None = None) -> Server:
    """Start uvicorn in a subprocess and wait until ``/ready`` answers 200 (or fail with its log)."""
    port = _free_port()
    env = {
        **os.environ,
        "MOVIEREC_DATABASE_URL": db_url,
        "MOVIEREC_MODEL_STORE": str(store),
        "MOVIEREC_API_KEY": "",
        "MOVIEREC_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"movierec server exited with {process.returncode} before it was ready:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_server(server)
    pytest.fail(f"movierec server not ready within 90 s:\n{server.log()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@dataclass
class World:
    """The database and model store the servers share."""

    workdir: Path
    db_url: str
    store: Path


@pytest.fixture(scope="session")
def browser_path() -> str:
    """Skip (not fail) when the browser or its driver is absent; say exactly what is missing."""
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed (looked for $MOVIEREC_E2E_CHROMIUM, else /usr/bin/chromium and "
                    "chromium on PATH): "
                    "`apt-get install -y chromium` to run the browser tests")
    pytest.importorskip("playwright.sync_api", reason="the `playwright` Python package is not installed "
                        "(pip install playwright; no `playwright install` needed, system Chromium is used)")
    return path


@pytest.fixture(scope="session")
def world(browser_path: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A migrated SQLite database with the synthetic catalogue and a published model."""
    workdir = tmp_path_factory.mktemp("e2e")
    db_url = f"sqlite:///{workdir / 'db.sqlite'}"
    upgrade(db_url)
    ratings = catalogue.synthetic_ratings()
    catalogue.import_into(db_url, ratings)
    store = workdir / "models"
    catalogue.publish_model(store, ratings)
    return World(workdir, db_url, store)


@pytest.fixture(scope="session")
def server(world: World) -> Iterator[Server]:
    """The API without an API key (writes open), as after `make run`."""
    srv = start_server(world.workdir, world.db_url, world.store, "server")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def keyed_server(world: World) -> Iterator[Server]:
    """The same data served by an API that requires ``X-API-Key`` for writes."""
    srv = start_server(world.workdir, world.db_url, world.store, "keyed-server", {"MOVIEREC_API_KEY": API_KEY})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def browser(browser_path: str) -> Iterator[object]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)  # CI machines are slower than laptops
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=browser_path, headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@dataclass
class PageProbe:
    """What a page did: console errors, uncaught exceptions and every URL it requested."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def assert_clean(self, base_url: str, allow: tuple[str, ...] = ()) -> None:
        foreign = [u for u in self.requests if not (u.startswith(base_url) or u.startswith("data:"))]
        assert not foreign, f"the page fetched from other origins (no CDN allowed): {foreign}"
        errors = [e for e in self.errors if not any(a in e for a in allow)]
        assert not errors, f"browser console errors: {errors}"


def new_page(browser, viewport: dict[str, int]):
    """A fresh context (own localStorage) and page with a probe attached."""
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
    context.set_default_timeout(15_000)
    page = context.new_page()
    probe = PageProbe()
    page.on("console", lambda msg: probe.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: probe.errors.append(f"uncaught: {exc}"))
    page.on("request", lambda req: probe.requests.append(req.url))
    return context, page, probe


@pytest.fixture
def desktop(browser) -> Iterator[tuple]:
    context, page, probe = new_page(browser, DESKTOP)
    yield page, probe
    context.close()


@pytest.fixture
def phone(browser) -> Iterator[tuple]:
    context, page, probe = new_page(browser, PHONE)
    yield page, probe
    context.close()


def shot(page, name: str, full_page: bool = True) -> Path:
    """Save a screenshot under the artifacts folder and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
