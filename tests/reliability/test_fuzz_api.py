"""Property-based fuzzing of the live API from its own OpenAPI schema (schemathesis + hypothesis).

The operations are listed from ``create_app().openapi()`` at collection; the cases are generated
from, and responses checked against, the schema the running server serves at ``/openapi.json``
(the two must list the same operations).

Every operation of the schema, each with three kinds of credentials (the right ``X-API-Key``, a
wrong one, none), valid and invalid inputs generated from the schema, sent over HTTP to a real
``movierec serve`` on PostgreSQL that has an API key configured. For every response:

* never a 5xx;
* the status code is one the operation documents, the content type and the body match the
  documented response schema;
* invalid bodies and path parameters (schemathesis' negative mode) are rejected with a 4xx;
* a 4xx body says what was wrong: JSON ``detail`` that is a non-empty message, or a list of
  validation errors each naming the offending location and a message;
* writes (POST/DELETE) without the right key are never accepted (never 2xx), and a well-formed
  write without it is 401.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (it belongs in the test extra)")
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from movierec.settings import Settings

from .conftest import API_KEY
from .harness import Server, knob, record

CREDENTIALS = {"right key": {"X-API-Key": API_KEY}, "wrong key": {"X-API-Key": "not-the-key"}, "no key": {}}
STRICT_LOCATIONS = (ParameterLocation.BODY, ParameterLocation.PATH)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = knob("fuzz_examples", 12, 150)


def _app_schema() -> dict[str, Any]:
    from app.main import create_app

    return create_app(Settings(api_key=API_KEY)).openapi()


SCHEMA_DICT = _app_schema()
OPERATIONS = [(method.upper(), path) for path, ops in SCHEMA_DICT["paths"].items() for method in ops]
STATS: dict[str, int] = {"requests": 0, "operations": 0, "failed": 0}


@pytest.fixture(scope="module")
def live_schema(shared_server: Server) -> Any:
    """The schema the server serves: what responses are checked against."""
    live = httpx.get(shared_server.url + "/openapi.json", timeout=10).json()
    served = [(method.upper(), path) for path, ops in live["paths"].items() for method in ops]
    assert sorted(served) == sorted(OPERATIONS), "the served operations differ from create_app().openapi()'s"
    return schemathesis.openapi.from_dict(live)


@pytest.fixture(scope="module")
def fuzz_server(shared_server: Server, live_schema: Any) -> Iterator[Server]:
    yield shared_server
    if STATS["operations"]:
        held = ("no 5xx; statuses, content types and bodies as documented; 4xx bodies name the problem; no write "
                "accepted without the key")
        if STATS["failed"]:
            held = f"FAILED in {STATS['failed']} of {STATS['operations']} operation x credential runs (see failures)"
        record("API fuzzing", f"schemathesis on {len(OPERATIONS)} operations x {{right key, wrong key, no key}}, "
               "valid and invalid inputs", STATS["requests"], held, ok=not STATS["failed"])


def explain_4xx(response: Any) -> None:
    """A client error says what was wrong."""
    content_type = response.headers.get("content-type") or [""]
    if isinstance(content_type, list):
        content_type = content_type[0]
    assert content_type.startswith("application/json"), response.text[:200]
    body = response.json()
    assert isinstance(body, dict) and "detail" in body, body
    detail = body["detail"]
    if isinstance(detail, str):
        assert detail.strip(), body
    else:
        assert isinstance(detail, list) and detail, body
        for error in detail:
            assert error.get("msg") and isinstance(error.get("loc"), list), error
    text = json.dumps(body)
    assert "Traceback" not in text and 'File "' not in text, text


@pytest.mark.parametrize("credentials", list(CREDENTIALS))
@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_operation(fuzz_server: Server, live_schema: Any, method: str, path: str, credentials: str) -> None:
    operation = live_schema[path][method]
    strategy = (operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
                | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    headers = CREDENTIALS[credentials]
    is_write = method in ("POST", "DELETE") and operation.definition.raw.get("security")
    counts = {"n": 0, "2xx": 0, "4xx": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=fuzz_server.url, headers=headers, timeout=30)
        counts["n"] += 1
        checks = list(CHECKS)
        if case.meta is not None and any(case.meta.is_negative_at(loc) for loc in STRICT_LOCATIONS):
            # Invalid bodies and path parameters must be rejected. Invalid *query* values are not
            # checked this way: serialised into a URL, schemathesis' "invalid" array, object, bool
            # or 0.0 often becomes a valid string or number (exclude=, genre=false, min_year=0.0).
            checks.append(negative_data_rejection)
        case.validate_response(response, checks=checks)
        status = response.status_code
        if 400 <= status < 500:
            counts["4xx"] += 1
            explain_4xx(response)
        elif 200 <= status < 300:
            counts["2xx"] += 1
        if is_write and credentials != "right key":
            assert not 200 <= status < 300, f"{method} {path} accepted without the right key: {status}"

    STATS["operations"] += 1
    try:
        run()
    except BaseException:
        STATS["failed"] += 1
        raise
    finally:
        STATS["requests"] += counts["n"]
    if is_write and credentials != "right key":
        # A well-formed write without the key: 401, nothing else.
        assert counts["2xx"] == 0
