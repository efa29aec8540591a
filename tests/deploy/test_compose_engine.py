"""docker-compose.yml on a real Docker Engine: `make compose-test`'s whole scenario
(scripts/docker/compose_test.py), in a compose project of its own, ending with `down --volumes`.

Minutes, not seconds: the images are built (cached after the first time), MovieLens 100K is
trained twice in containers. Without a Docker Engine answering here the test is skipped and says
so (install docker.io and start dockerd; `.ci/run` does both); `MOVIEREC_TEST_DOCKER=skip` skips it
on purpose. The table of what held is printed at the end of the run (tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.docker]

SCENARIO = REPO / "scripts" / "docker" / "compose_test.py"
#: compose_test.py's exit status when no engine answers.
NO_ENGINE = 2


def test_compose_stack_on_a_real_docker_engine(record_property: pytest.RecordProperty) -> None:
    if os.environ.get("MOVIEREC_TEST_DOCKER") == "skip":
        pytest.skip("the compose stack on a real Docker Engine is switched off by MOVIEREC_TEST_DOCKER=skip")
    timeout = float(os.environ.get("COMPOSE_TEST_TIMEOUT", "2400"))
    proc = subprocess.run([sys.executable, str(SCENARIO)], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode == NO_ENGINE:
        pytest.skip(f"not run on a real Docker Engine: {proc.stderr.strip()} (make compose-test runs it)")
    table = proc.stdout[proc.stdout.find("compose-test on a real Docker Engine"):]
    record_property("compose_table", table)
    assert proc.returncode == 0, f"{table}\n--- log ---\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
