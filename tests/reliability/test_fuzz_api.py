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
import urllib.parse
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


# -- hostile strings -----------------------------------------------------------------------------------

#: Text a JSON body, a path or a query can carry that no well-behaved client sends: lone UTF-16
#: surrogates (legal as JSON escapes, unencodable as UTF-8), overlong and truncated UTF-8, NULs,
#: bidi and other invisible controls. ``bytes`` are sent raw (invalid UTF-8 on the wire).
HOSTILE_STRINGS: list[str | bytes] = [
    "\udfff", "\ud800", "a\ud83db", "\udfff\ud800", "\x00", "a\x00b", "\u202e", "abc\u202edef\u202c",
    "\u2066\u2069", "\u200f\u200e", "\ufeff", "\uffff", "\U0010ffff", "\x1b[31m", "%00", "%",
    b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xc0\x80", b"\xed\xbf\xbf", b"\xff\xfe", b"\xe2\x82",
]


def _url_bytes(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return urllib.parse.quote_from_bytes(raw, safe="").encode()


def _json_bytes(value: str | bytes) -> bytes:
    return b'"' + value + b'"' if isinstance(value, bytes) else json.dumps(value).encode()


def hostile_requests(strings: list[str | bytes]) -> Iterator[tuple[str, bytes, bytes]]:
    """``(method, request target, body)`` with each hostile string in each path and query parameter
    of every operation of the schema, and as values, keys and whole bodies of the JSON bodies."""
    for path, operations in SCHEMA_DICT["paths"].items():
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            plain = {p["name"]: b"1" for p in params}
            for hostile in strings:
                value = _url_bytes(hostile)
                for target in params:
                    names = {**plain, target["name"]: value}
                    url = path.encode()
                    for name, v in names.items():
                        url = url.replace(b"{" + name.encode() + b"}", v)
                    query = b"&".join(name.encode() + b"=" + v for name, v in names.items()
                                      if next(p for p in params if p["name"] == name)["in"] == "query")
                    yield method.upper(), url + (b"?" + query if query else b""), b""
                if "requestBody" in operation:
                    j = _json_bytes(hostile)
                    url = path.encode()
                    for name in plain:
                        url = url.replace(b"{" + name.encode() + b"}", b"1")
                    for body in (j, b"[" + j + b"]", b'{"user_id": ' + j + b', "movie_id": 1, "rating": 4}',
                                 b'{"user_id": 1, "movie_id": 1, "rating": ' + j + b"}",
                                 b'[{"user_id": 1, "movie_id": 1, ' + j + b": 1}]",
                                 b'{"user_id": 1, "movie_id": 1, "rating": 4, "rated_at": ' + j + b"}"):
                        yield method.upper(), url, body


def _raw_status(port: int, method: str, target: bytes, body: bytes) -> int | None:
    """The status of a request sent as raw bytes (None: the server closed the connection instead)."""
    from .test_security import raw_status

    return raw_status(port, method.encode() + b" " + target + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                      b"X-API-Key: " + API_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_hostile_strings_never_get_a_5xx(shared_server: Server) -> None:
    """Before: a lone surrogate in a JSON body (``"\\udfff"``) was a 500 with a traceback in the log."""
    sent, statuses = 0, set()
    for method, target, body in hostile_requests(HOSTILE_STRINGS):
        status = _raw_status(shared_server.port, method, target, body)
        sent += 1
        statuses.add(status)
        assert status is None or status < 500, (method, target[:100], body[:100], status)
    assert httpx.get(shared_server.url + "/health", timeout=10).status_code == 200
    assert "Traceback" not in shared_server.log()
    record("API fuzzing", "hostile strings (lone surrogates, overlong/truncated UTF-8, NUL, bidi controls) in every "
           "path and query parameter and in JSON values, keys and bodies, as raw bytes", sent,
           f"no 5xx (statuses {sorted(s for s in statuses if s is not None)}), no traceback in the log")
