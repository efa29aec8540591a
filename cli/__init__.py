"""The composition root: the ``movierec`` command, the one package that wires the others together.

It sits above everything else in the import graph. It imports the core (``movierec``), the
trainer's ``train`` command (``trainer.cli``), the API's ``serve`` command (``app.cli``) and the
migrations (``migrations``); none of them imports it, the core imports none of them, and the
trainer and the API never import each other (tests/test_architecture.py checks all of this).

One module per command group: ``db``, ``data``, ``importing`` (``movierec import``), ``models``;
``main`` assembles them and is the console script's entry point.
"""

from .main import app, main

__all__ = ["app", "main"]
