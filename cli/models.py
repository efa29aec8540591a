"""``movierec models``: the versioned model store (list, current, rollback, use, candidate, promote)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

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
    candidate = ModelStore(get_settings().model_store).candidate()
    for row in rows:
        metrics = row.get("metrics") or {}
        shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, int | float))
        mark = "*" if row["current"] else "c" if candidate is not None and candidate.version == row["version"] else " "
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


@models_app.command("candidate")
def models_candidate(
    version: Annotated[Optional[int], typer.Argument(help="Version to serve to a share of users.")] = None,
    share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of users it serves (0..1).")] = 0.1,
    salt: Annotated[Optional[str], typer.Option(help="Hash salt of the split (default: kept for the same "
                                                     "version, else new).")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Stop serving the candidate.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Accept a version published past a refusing "
                                                        "quality gate.")] = False,
) -> None:
    """Serve VERSION to a stable, hashed share of users while CURRENT serves the rest.

    Without arguments, print the candidate. The running API follows the pointer by itself.
    """
    from movierec.store import ModelStore, StoreError

    store = ModelStore(get_settings().model_store)
    if clear:
        old = store.clear_candidate()
        typer.echo(f"candidate version {old.version} cleared" if old is not None else "there was no candidate")
        return
    if version is None:
        current = store.candidate()
        if current is None:
            raise fail("there is no candidate; set one with `movierec models candidate N --share 0.1`")
        typer.echo(json.dumps(current.to_dict()))
        return
    try:
        gate = store.read_manifest(version).get("gate") or {}
        if gate.get("passed") is False and not force:
            raise fail(f"version {version} was published over a refusing quality gate ({gate.get('reason')}); "
                       "--force to serve it anyway")
        candidate = store.set_candidate(version, share, salt)
    except StoreError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"version {candidate.version} serves {100 * candidate.share:g} % of users "
               f"(salt {candidate.salt}); version {store.current_version()} serves the rest")


@models_app.command("promote")
def models_promote() -> None:
    """Make the candidate current (it then serves everybody) and clear the candidate."""
    from movierec.store import ModelStore, StoreError

    try:
        version = ModelStore(get_settings().model_store).promote()
    except StoreError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"version {version} is current")
