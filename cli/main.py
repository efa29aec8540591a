"""The ``movierec`` command, assembled: the core's commands, ``train`` from the trainer, ``serve`` from the app.

Expected failures (bad files, unreachable database or network, empty store) print one clear line
to stderr and exit non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from app.cli import serve
from movierec import __version__
from movierec.settings import get_settings
from trainer.cli import train

from .data import data_app
from .db import db_app
from .importing import import_app
from .models import models_app
from .report import report_app

app = typer.Typer(help="movierec: movie recommendations from latent factors.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(db_app, name="db")
app.add_typer(data_app, name="data")
app.add_typer(import_app, name="import")
app.add_typer(models_app, name="models")
app.add_typer(report_app, name="report")
# The trainer and the API each own their command; both modules are cheap to import
# (torch and uvicorn are imported inside the commands).
app.command("train")(train)
app.command("serve")(serve)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    logging.basicConfig(level=get_settings().log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Libraries' INFO lines (every HTTP request, alembic's plugin set-up) drown the CLI's own output.
    for noisy in ("httpx", "httpcore", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> None:
    """Console-script entry point."""
    app()
