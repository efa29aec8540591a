"""Fixtures of the reliability tests: a fresh PostgreSQL database with a small catalogue, a model
store holding one synthetic model, and a running ``movierec serve`` on them.

Everything runs against real processes and the real PostgreSQL server (``postgres_admin_url``
from tests/conftest.py); nothing here stops or reconfigures that server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness import SUMMARY, Server, child_env, fresh_postgres, publish_synthetic, running_server, seed

N_USERS, N_MOVIES = 50, 40
API_KEY = "reliability-test-key-0123456789"


@dataclass
class Stack:
    """A database URL, a model store and the environment a server on them gets."""

    db_url: str
    store: Path
    workdir: Path
    env: dict[str, str]

    def server(self, workers: int = 1, **extra_env: str) -> Iterator[Server]:
        return running_server({**self.env, **extra_env}, self.workdir, workers=workers)


def make_stack(admin_url: str, tmp: Path, api_key: str | None = API_KEY, **extra_env: str) -> Iterator[Stack]:
    with fresh_postgres(admin_url) as url:
        seed(url, range(1, N_MOVIES + 1),
             [(u, m, float(1 + (u * m) % 5), 500 + u) for u in range(1, N_USERS + 1) for m in range(1, 6)])
        store = tmp / "models"
        publish_synthetic(store, n_users=N_USERS, n_movies=N_MOVIES)
        env = child_env(
            MOVIEREC_DATABASE_URL=url, MOVIEREC_MODEL_STORE=str(store), MOVIEREC_DATA_DIR=str(tmp / "data"),
            MOVIEREC_RELOAD_INTERVAL="0.2", MOVIEREC_API_KEY=api_key or "", **extra_env,
        )
        yield Stack(url, store, tmp / "work", env)


@pytest.fixture
def stack(postgres_admin_url: str, tmp_path: Path) -> Iterator[Stack]:
    """A fresh stack for one test (fresh database, one synthetic model published)."""
    yield from make_stack(postgres_admin_url, tmp_path)


@pytest.fixture(scope="module")
def shared_stack(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for a whole module (tests must not depend on each other's writes)."""
    yield from make_stack(postgres_admin_url, tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="module")
def shared_server(shared_stack: Stack) -> Iterator[Server]:
    """A server on ``shared_stack``, with the API key set, for a whole module."""
    with running_server(shared_stack.env, shared_stack.workdir) as server:
        server.wait_for("/ready")
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the reliability tests tried and what held (the rows the soak table is made of)."""
    if not SUMMARY:
        return
    terminalreporter.section("reliability")
    for row in SUMMARY:
        terminalreporter.write_line(f"[{row['area']}] {row['tried']} x{row['times']}: {row['held']}")
