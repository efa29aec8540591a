"""`make compose-up` / `make compose-down` where they cannot work: one line saying why, exit 1.

These need no engine (the ones that do, a port taken and a failed build, are rows of
`make compose-test`, tests/deploy/test_compose_engine.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

STACK = REPO / "scripts" / "docker" / "stack.py"


def run_stack(command: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(STACK), "--project-name", "movierec-unit", "--env-file",
                           str(tmp_path / "none.env"), "--no-record", command],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)


@pytest.mark.parametrize("command", ["up", "down"])
def test_no_engine_answering_is_one_line(command: str, tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    proc = run_stack(command, env, tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: no Docker Engine answers at unix://{tmp_path}/no-engine.sock")
    assert "dockerd" in lines[0], "it says how to start one"
    assert not (tmp_path / "none.env").exists()


@pytest.mark.parametrize("command", ["up", "down"])
def test_no_docker_cli_is_one_line(command: str, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # neither docker nor anything else on PATH
    proc = run_stack(command, env, tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0] == ("error: no docker CLI on PATH: install Docker Engine (Debian: apt-get install docker.io) "
                        "and start it")
