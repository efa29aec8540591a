"""Alembic migrations of the ratings database (shipped inside the package so installs can upgrade).

This package sits above the core: its scripts import the schema from ``movierec.db``, and the
functions below hand ``movierec.db.migrate`` the folder they live in. Everything that migrates
(``movierec db upgrade``, the tests, the benchmarks) goes through them.
"""

from __future__ import annotations

from pathlib import Path

from movierec.db import migrate

#: The Alembic script directory: ``env.py``, ``script.py.mako`` and ``versions/``.
SCRIPTS = Path(__file__).resolve().parent


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (the newest by default)."""
    migrate.upgrade(url, revision, scripts=SCRIPTS)


def downgrade(url: str, revision: str) -> None:
    """Take the database at ``url`` down to ``revision`` (``base`` empties it)."""
    migrate.downgrade(url, revision, scripts=SCRIPTS)


def head_revision() -> str:
    """The newest revision these migrations know."""
    return migrate.head_revision(scripts=SCRIPTS)
