"""`docker compose up` without an engine: the compose replay (compose_replay/) runs the services' commands
as local processes against a fresh PostgreSQL database and checks /ready, /recommend and POST /ratings.

Takes about a minute on an idle 2-core machine (training MovieLens 100K dominates); `make smoke`
runs the same replay on its own.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from .conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_compose_stack_answers_recommend(smoke_module: ModuleType, compose_cli: str, postgres_admin_url: str) -> None:
    timeout = float(os.environ.get("SMOKE_TIMEOUT", "900"))
    try:
        observed = smoke_module.smoke(REPO / "docker-compose.yml", postgres_admin_url, timeout=timeout)
    except smoke_module.SmokeError as exc:
        pytest.fail(f"compose smoke run failed: {exc}", pytrace=False)
    status, body = observed["ready_before_model"]
    assert status == 503, body
    assert observed["recommended"]
