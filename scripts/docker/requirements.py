#!/usr/bin/env python3
"""What the images install, read from pyproject.toml in one place.

``stack.py`` stamps the wheelhouse with :func:`digest` (so a changed dependency refills it) and
``wheelhouse.sh`` downloads what :func:`write_lists` writes; both read the same list.

    python scripts/docker/requirements.py DIR    # DIR/torch.txt, DIR/torch-version, DIR/requirements.txt
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def image_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """The project's dependencies, its ``train`` extra and the build backend (the trainer image needs all)."""
    project = tomllib.loads(pyproject.read_text())
    return [*project["project"]["dependencies"], *project["project"]["optional-dependencies"]["train"],
            *project["build-system"]["requires"]]


def digest(pyproject: Path = PYPROJECT) -> str:
    """A short digest of :func:`image_requirements`, order-independent."""
    return hashlib.sha256("\n".join(sorted(image_requirements(pyproject))).encode()).hexdigest()[:16]


def write_lists(out: Path, pyproject: Path = PYPROJECT) -> None:
    """torch's pin (``torch.txt``, ``torch-version``) and the rest (``requirements.txt``) into ``out``.

    torch is downloaded apart (the CPU build, from its own index when given), so it must be pinned
    with ``==`` exactly once.
    """
    wanted = image_requirements(pyproject)
    torch = [r for r in wanted if re.match(r"torch\s*==", r)]
    if len(torch) != 1:
        raise SystemExit(f"pyproject.toml must pin torch with == exactly once, found {torch}")
    (out / "torch.txt").write_text(torch[0] + "\n")
    (out / "torch-version").write_text(torch[0].split("==")[1].strip())
    (out / "requirements.txt").write_text("\n".join(r for r in wanted if r not in torch) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: requirements.py DIR")
    write_lists(Path(sys.argv[1]))
