"""Apply Alembic migrations programmatically, so `movierec db upgrade` works from any install.

The migration scripts live above the core (the ``migrations`` package imports the schema from
here), so every function that reads them takes their folder, ``scripts``, from the caller:
``migrations.upgrade(url)`` passes its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from .engine import make_engine


def alembic_config(url: str, scripts: Path) -> Config:
    """An Alembic config pointing at the migration scripts in ``scripts`` and at ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(scripts))
    # '%' is ConfigParser interpolation syntax; URLs with escaped passwords contain it.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _run(url: str, action: Callable[[Config, str], None], revision: str, scripts: Path) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            cfg = alembic_config(url, scripts)
            cfg.attributes["connection"] = conn
            action(cfg, revision)
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head", *, scripts: Path) -> None:
    """Bring the database at ``url`` up to ``revision`` of the migrations in ``scripts``."""
    _run(url, command.upgrade, revision, scripts)


def downgrade(url: str, revision: str, *, scripts: Path) -> None:
    """Take the database at ``url`` down to ``revision`` (``base`` empties it)."""
    _run(url, command.downgrade, revision, scripts)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(*, scripts: Path) -> str:
    """The newest revision of the migrations in ``scripts``."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://", scripts))
    head = script.get_current_head()
    assert head is not None
    return head
