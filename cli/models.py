"""``movierec models``: the versioned model store (list, current, rollback, use)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from movierec.settings import get_settings

from .errors import fail

models_app = typer.Typer(help="The model store.", no_args_is_help=True)


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List model versions with their metrics; the current one is marked with *."""
    from movierec.store import ModelStore

    rows = ModelStore(get_settings().model_store).list()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no models yet; run `movierec train`")
        return
    for row in rows:
        metrics = row.get("metrics") or {}
        shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, int | float))
        mark = "*" if row["current"] else " "
        typer.echo(f"{mark} {row['version']:>4}  {row.get('kind', '?'):4} k={row.get('factors', '?'):<4} "
                   f"{row.get('created_at', '')}  {row.get('error', shown)}")


@models_app.command("current")
def models_current() -> None:
    """Print the version the API serves; exit 1 when the store has none."""
    from movierec.store import ModelStore

    version = ModelStore(get_settings().model_store).current_version()
    if version is None:
        raise fail("no model in the store; run `movierec train`")
    typer.echo(version)


@models_app.command("rollback")
def models_rollback() -> None:
    """Make the version before the current one current (the API picks it up by itself)."""
    from movierec.store import ModelStore, StoreError

    try:
        version = ModelStore(get_settings().model_store).rollback()
    except StoreError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"version {version} is current")


@models_app.command("use")
def models_use(version: Annotated[int, typer.Argument(help="Version to serve.")]) -> None:
    """Make a given version current after checking that it loads."""
    from movierec.store import ModelStore, StoreError

    try:
        ModelStore(get_settings().model_store).set_current(version)
    except StoreError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"version {version} is current")
