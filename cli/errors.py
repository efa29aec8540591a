"""Expected failures as one clear line: ``error: ...`` on stderr and a non-zero exit, no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` to stderr and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as the user gave it
        return url


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn database failures into one clear line naming the (password-masked) URL."""
    from movierec.db.engine import DatabaseError

    try:
        yield
    except (SQLAlchemyError, DatabaseError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise fail(f"database {safe_url(url)}: {reason}") from None


@contextmanager
def database(url: str) -> Iterator[Engine]:
    """An engine on ``url`` for one command; database errors become one clear line."""
    from movierec.db.engine import make_engine

    with database_errors(url):
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()
