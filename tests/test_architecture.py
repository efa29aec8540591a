"""The import graph keeps the layers the README draws.

    cli/          the composition root: the `movierec` command; may import everything below
    app/  trainer/  migrations/    the two programs and the migrations: import the core, never each other
    movierec/     the shared core: imports nothing of ours

Every module of these packages is parsed (not imported, so this runs in milliseconds and sees
imports inside functions too); relative imports are resolved against the module's package. On top
of the layers: the API never imports training libraries, the trainer never imports the web stack,
and the core, which both of them load, imports neither.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Each first-party package and the first-party packages it may import (besides itself).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "movierec": frozenset(),
    "migrations": frozenset({"movierec"}),
    "app": frozenset({"movierec"}),
    "trainer": frozenset({"movierec"}),
    "cli": frozenset({"movierec", "migrations", "app", "trainer"}),
}
TRAINING = frozenset({"torch", "numba", "matplotlib"})
WEB = frozenset({"fastapi", "starlette", "uvicorn"})
#: Third-party packages a first-party package must not import.
NEVER: dict[str, frozenset[str]] = {
    "movierec": TRAINING | WEB,
    "app": TRAINING,
    "trainer": WEB,
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, absolute and dotted
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def imports_in(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import statement in ``source`` (any depth: module level, functions, branches)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append(Import(module, target, node.lineno))
    return found


@cache
def first_party_imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for top in MAY_IMPORT:
        for path in sorted((REPO / top).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            module = ".".join(parts[:-1] if is_package else parts)
            found += imports_in(path.read_text(encoding="utf-8"), module, is_package)
    return tuple(found)


def violations(imports: tuple[Import, ...] | list[Import]) -> list[str]:
    """Each import that breaks a rule above, with the rule it breaks."""
    problems = []
    for imp in imports:
        owner, target = imp.module.split(".")[0], imp.target.split(".")[0]
        if target in MAY_IMPORT and target != owner and target not in MAY_IMPORT[owner]:
            allowed = MAY_IMPORT[owner]
            rule = f"may import only {', '.join(sorted(allowed))}" if allowed else "imports nothing of ours"
            problems.append(f"{imp}: {owner} {rule}")
        if target in NEVER.get(owner, ()):
            problems.append(f"{imp}: {owner} must not import {sorted(NEVER[owner])}")
    return problems


def test_every_package_is_parsed() -> None:
    modules = {imp.module for imp in first_party_imports()}
    for expected in ("movierec.store", "movierec.db.migrate", "migrations", "app.main", "app.cli",
                     "trainer.pipeline", "trainer.cli", "cli.main"):
        assert expected in modules


def test_imports_keep_the_layers() -> None:
    problems = violations(first_party_imports())
    assert not problems, "\n".join(problems)


def test_only_the_root_wires_the_programs_together() -> None:
    """The composition root really is the place where app and trainer meet."""
    root = {imp.target.split(".")[0] for imp in first_party_imports() if imp.module.startswith("cli.")}
    assert {"movierec", "migrations", "app", "trainer"} <= root


def test_the_check_catches_forbidden_imports() -> None:
    planted = [
        *imports_in("def f():\n    from app.deps import x\n", "movierec.settings"),
        *imports_in("from ..trainer import fit\n", "cli.sub.x"),  # cli.trainer: allowed
        *imports_in("import migrations\n", "movierec.db.migrate"),
        *imports_in("if True:\n    import torch.nn as nn\n", "app.serving"),
        *imports_in("from starlette.requests import Request\n", "trainer.fit"),
        *imports_in("import matplotlib\n", "movierec.store"),
        *imports_in("from trainer import fit\n", "app.x"),
        *imports_in("from app import main\n", "trainer.x"),
        *imports_in("import cli\n", "migrations.env"),
        *imports_in("from .db import schema\nimport torch\n", "movierec", is_package=True),
    ]
    found = violations(planted)
    assert [p.split(":")[0] for p in found] == [
        "movierec.settings", "movierec.db.migrate", "app.serving", "trainer.fit", "movierec.store", "app.x",
        "trainer.x", "migrations.env", "movierec"]
    assert str(planted[-2]) == "movierec:1 imports movierec.db"
    assert planted[1].target == "cli.trainer" and planted[0].line == 2
