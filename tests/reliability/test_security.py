"""Security properties, checked on the live server and statically on the code and the Dockerfile.

* writes (every POST and DELETE of the schema) need ``X-API-Key`` when one is configured, compared
  in constant time (``secrets``/``hmac.compare_digest``, never ``==``);
* SQL is built only through SQLAlchemy constructs and bound parameters (static scan), and
  injection-looking search and filter values are harmless (matched literally, tables intact);
* request bodies and lists are limited (413 / 422, nothing stored), oversize URLs and headers and
  pathological JSON are refused without a 5xx;
* no response carries a stack trace or internals, even for broken requests or a broken database;
* the model store reads only safetensors and JSON (no pickle anywhere in the loading code) and
  refuses paths outside itself (``/model/files`` traversal, odd version numbers);
* the container runs as a non-root user (static check of the Dockerfile's final stage).
"""

from __future__ import annotations

import ast
import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from movierec.store import ModelStore, StoreError

from .conftest import API_KEY, N_MOVIES, Stack
from .harness import REPO_ROOT, Server, db_exec, db_rows, fresh_postgres, publish_synthetic, record, running_server

KEY = {"X-API-Key": API_KEY}
PRODUCT_DIRS = ("app", "movierec", "trainer")
LEAKS = re.compile(r"Traceback|File \"|\.py\"?, line|sqlalchemy|sqlalche\.me|psycopg|/work/|site-packages|"
                   r"\[SQL:|\[parameters:|SELECT .* FROM|INSERT INTO", re.IGNORECASE)
TRACE = re.compile(r"Traceback|File \"|\.py\"?, line|sqlalche\.me|psycopg|site-packages|\[SQL:", re.IGNORECASE)


def product_files() -> list[Path]:
    return sorted(p for d in PRODUCT_DIRS for p in (REPO_ROOT / d).rglob("*.py"))


def assert_no_leak(response: httpx.Response, echo: str = "") -> None:
    """No trace, file path, driver name or SQL in the body (``echo``: the client's own input, allowed back)."""
    pattern = TRACE if echo else LEAKS  # echoed SQL-looking input is the client's own text
    assert not pattern.search(response.text), f"{response.status_code} leaks internals: {response.text[:500]}"


# -- API key -------------------------------------------------------------------------------------


def well_formed_writes(url: str) -> list[tuple[str, str, object]]:
    """One valid request for every POST/DELETE operation the schema declares as key-protected."""
    schema = httpx.get(url + "/openapi.json", timeout=10).json()
    samples: dict[tuple[str, str], tuple[str, object]] = {
        ("POST", "/ratings"): ("/ratings", {"user_id": 41_000, "movie_id": 3, "rating": 4.5}),
        ("DELETE", "/users/{user_id}/ratings/{movie_id}"): ("/users/1/ratings/1", None),
        ("POST", "/admin/reload"): ("/admin/reload", None),
        ("POST", "/events"): ("/events", {"request_id": "0" * 32, "movie_id": 3, "kind": "click"}),
    }
    writes = []
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            if method.upper() in ("POST", "DELETE", "PUT", "PATCH") and (method.upper(), path) != ("POST", "/predict"):
                assert op.get("security"), f"{method.upper()} {path} is a write without the API key requirement"
                assert (method.upper(), path) in samples, f"new write operation {method.upper()} {path}: add a sample"
                real_path, body = samples[(method.upper(), path)]
                writes.append((method.upper(), real_path, body))
    return writes


def test_every_write_needs_the_api_key(shared_server: Server, shared_stack: Stack) -> None:
    url = shared_server.url
    writes = well_formed_writes(url)
    wrong = [{}, {"X-API-Key": ""}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY[:-1]}, {"X-API-Key": API_KEY + "x"},
             {"X-API-Key": API_KEY.upper()}, {"X-Api-Key-Other": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}]
    counts = "SELECT (SELECT count(*) FROM ratings), (SELECT count(*) FROM events)"
    before = db_rows(shared_stack.db_url, counts)[0]
    tried = 0
    with httpx.Client(timeout=30) as client:
        for method, path, body in writes:
            for headers in wrong:
                r = client.request(method, url + path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                assert r.json()["detail"] and r.headers.get("www-authenticate") == "ApiKey"
                tried += 1
            r = client.request(method, url + path + f"?api_key={API_KEY}", json=body)
            assert r.status_code == 401, "the key must not be accepted from the query string"
        assert db_rows(shared_stack.db_url, counts)[0] == before
        for method, path, body in writes:
            r = client.request(method, url + path, json=body, headers={"x-api-key": API_KEY})  # any header case
            assert r.status_code != 401, (method, path, r.text)
    assert API_KEY not in shared_server.log(), "the API key appears in the server log"
    record("security", "POST/DELETE without, with a wrong, truncated, extended or misplaced X-API-Key", tried,
           "all 401, nothing stored; the right key works in any header case; key never logged")


def _calls(tree: ast.AST, names: set[str]) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name in names:
                out.append(node)
    return out


def test_api_key_is_compared_in_constant_time() -> None:
    security = (REPO_ROOT / "app" / "security.py").read_text()
    tree = ast.parse(security)
    digests = [c for c in _calls(tree, {"compare_digest"})]
    assert digests, "app/security.py does not use secrets.compare_digest / hmac.compare_digest"
    for path in product_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                text = ast.unparse(node)
                assert "api_key" not in text and "get_secret_value" not in text, (
                    f"{path.relative_to(REPO_ROOT)}:{node.lineno}: key compared with ==: {text}")


# -- SQL -----------------------------------------------------------------------------------------

SQL_SINKS = {"text", "exec_driver_sql", "execute", "executemany", "copy"}


def _is_formatted(node: ast.AST) -> bool:
    """A string built at run time: f-string, %, + or .format()."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return any(isinstance(side, (ast.Constant, ast.JoinedStr)) and not isinstance(getattr(side, "value", ""), (int, float))
                   or _is_formatted(side) for side in (node.left, node.right))
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"


def test_sql_is_built_only_from_constants_and_bound_parameters() -> None:
    """No SQL string anywhere in the product is assembled from values (f-string, %, + or format)."""
    offenders = []
    for path in product_files():
        tree = ast.parse(path.read_text(), str(path))
        formatted_names = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and _is_formatted(node.value)
                           for t in node.targets if isinstance(t, ast.Name)}
        for call in _calls(tree, SQL_SINKS):
            if not call.args:
                continue
            arg = call.args[0]
            if _is_formatted(arg) or (isinstance(arg, ast.Name) and arg.id in formatted_names):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{call.lineno}: {ast.unparse(call)[:120]}")
    assert not offenders, "SQL built by string formatting:\n" + "\n".join(offenders)


INJECTIONS = [
    "'; DROP TABLE ratings; --", "\" OR 1=1 --", "' OR '1'='1", "%", "_", "%%", "\\", "\\%", "movie%' --",
    "1; DELETE FROM movies", "') UNION SELECT id, title, year, genres FROM movies --", "❤️ Movie",
    "$$; DROP TABLE movies; $$", "ovie 1' /*", "Movie 1",
]


def test_injection_looking_inputs_are_harmless(shared_server: Server, shared_stack: Stack) -> None:
    url = shared_server.url
    before = db_rows(shared_stack.db_url, "SELECT (SELECT count(*) FROM movies), (SELECT count(*) FROM ratings)")[0]
    titles = [t for (t,) in db_rows(shared_stack.db_url, "SELECT title FROM movies")]
    sent = 0
    with httpx.Client(timeout=30) as client:
        for value in INJECTIONS:
            r = client.get(url + "/movies", params={"query": value, "limit": 100})
            sent += 1
            assert_no_leak(r, value)
            assert r.status_code == 200, (value, r.text)
            expected = sorted(t for t in titles if value.lower() in t.lower())
            assert sorted(m["title"] for m in r.json()["items"]) == expected, f"query {value!r} was not matched literally"
            for path, params in (("/movies", {"genre": value}), ("/popular", {"genre": value}),
                                 ("/recommend", {"user_id": 3, "genre": value}),
                                 ("/recommend", {"user_id": 3, "exclude": value})):
                r = client.get(url + path, params=params)
                sent += 1
                assert r.status_code in (200, 422), (path, value, r.status_code, r.text)
                assert_no_leak(r, value)
                if r.status_code == 200 and path != "/recommend":
                    assert r.json()["items"] == [] or value in ("Movie 1",), (path, value)
            r = client.get(url + "/model/files/" + httpx.URL(value.replace("/", "%2F")).path if value else "")
            sent += 1
            assert r.status_code in (404, 405, 422), (value, r.status_code)
    after = db_rows(shared_stack.db_url, "SELECT (SELECT count(*) FROM movies), (SELECT count(*) FROM ratings)")[0]
    assert after[0] == before[0] and after[0] == N_MOVIES
    assert after[1] >= before[1]  # other tests of the module may add ratings; nothing is ever removed here
    assert "syntax error" not in shared_server.log().lower()
    record("security", "SQL-injection-looking values in query/genre/exclude/path params", sent,
           "matched literally (LIKE wildcards escaped), no error, tables intact")


# -- sizes ---------------------------------------------------------------------------------------


BAD_VALUES = [("/movies", {"query": "a\x00b"}), ("/movies", {"genre": "\x00"}), ("/popular", {"genre": "\x00"}),
              ("/recommend", {"user_id": 3, "genre": "\x00"}), ("/users/1/ratings", {"offset": str(10**30)}),
              ("/users/1/ratings", {"offset": str(2**63)}), ("/movies", {"offset": str(10**30)})]


@pytest.mark.parametrize("path,params", BAD_VALUES, ids=[f"{p} {list(q.values())[-1][:12]!r}" for p, q in BAD_VALUES])
def test_unusable_values_are_a_client_error(shared_server: Server, path: str, params: dict) -> None:
    """A NUL character (PostgreSQL text cannot hold it) or an offset past BIGINT is the client's error:
    4xx with a documented body, not a 503 that says the database is down (and pages someone)."""
    r = httpx.get(shared_server.url + path, params=params, timeout=30)
    assert r.status_code in (200, 422), f"{path} {params!r}: {r.status_code} {r.text[:200]}"
    assert_no_leak(r)


@pytest.mark.parametrize("value", ["\u00b9", "\u0661", "\u00b2,3", "\uff11"])
def test_exclude_takes_only_ascii_movie_ids(shared_server: Server, value: str) -> None:
    """str.isdigit() is true for '¹', '١' and fullwidth '１': int() then fails (a 500) or reads another
    script's digit as a movie id. Only ASCII digits are ids; anything else is a 422 naming the value."""
    r = httpx.get(shared_server.url + "/recommend", params={"user_id": 3, "exclude": value}, timeout=30)
    assert r.status_code == 422, (value, r.status_code, r.text[:200])
    assert_no_leak(r, value)


def test_request_headers_are_limited(shared_server: Server) -> None:
    """A multi-megabyte header must be refused like an oversized body (4xx or connection closed).

    uvicorn's httptools parser has no header-size limit: without one, each connection can make the
    server buffer any amount of header bytes (MOVIEREC_MAX_BODY_BYTES only bounds bodies).
    """
    status = raw_status(shared_server.port, b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 4_000_000
                        + b"\r\n\r\n")
    assert status is None or 400 <= status < 500, f"a 4 MB request header was accepted ({status})"
    assert httpx.get(shared_server.url + "/health", timeout=10).status_code == 200


def test_body_and_list_sizes_are_limited(shared_server: Server, shared_stack: Stack) -> None:
    url = shared_server.url
    count = lambda: db_rows(shared_stack.db_url, "SELECT count(*) FROM ratings WHERE user_id >= 42000")[0][0]
    with httpx.Client(timeout=60) as client:
        # Body over MOVIEREC_MAX_BODY_BYTES (default 1 MiB), announced by Content-Length.
        big = [{"user_id": 42_000 + i, "movie_id": 1, "rating": 3.0} for i in range(30_000)]
        r = client.post(url + "/ratings", json=big, headers=KEY)
        assert r.status_code == 413 and "bytes" in r.json()["detail"], r.text[:300]
        # The same body streamed without Content-Length (chunked): counted while reading. Its 30 000
        # items pass the JSON value budget (MOVIEREC_MAX_BATCH items) before the byte limit: 422.
        payload = json.dumps(big).encode()
        r = client.post(url + "/ratings", content=iter([payload[i:i + 65536] for i in range(0, len(payload), 65536)]),
                        headers={**KEY, "Content-Type": "application/json"})
        assert r.status_code in (413, 422), r.text[:300]
        # A list longer than MOVIEREC_MAX_BATCH (default 1000) inside the byte limit.
        r = client.post(url + "/ratings", json=big[:1001], headers=KEY)
        assert r.status_code == 422 and "1000" in r.text, r.text[:300]
        r = client.post(url + "/predict", json=[{"user_id": 1, "movie_id": 1}] * 1001)
        assert r.status_code == 422 and "1000" in r.text, r.text[:300]
        assert count() == 0
        # Pathological but small bodies: deep nesting, huge numbers, NaN/Infinity literals, bad UTF-8.
        for raw in (b"[" * 50_000 + b"]" * 50_000, b'{"user_id": 1' + b"0" * 5000 + b', "movie_id": 1, "rating": 3}',
                    b"\xff\xfe{}", b"{" * 10):
            r = client.post(url + "/ratings", content=raw, headers={**KEY, "Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, (raw[:40], r.status_code, r.text[:200])
            assert_no_leak(r)
        assert count() == 0
        # Oversized URL (raw socket: httpx refuses to send it): refused, no 5xx, process alive.
        status = raw_status(shared_server.port, b"GET /movies?query=" + b"x" * 200_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status is None or 400 <= status < 500, status  # None: connection closed, also a refusal
        assert client.get(url + "/health").status_code == 200
    record("security", "bodies over 1 MiB (sized and chunked), lists over max_batch, deeply nested / 5000-digit / "
           "non-UTF-8 / truncated JSON, 200 kB URL", 10, "413/422/4xx, nothing stored, no 5xx, process alive")


def raw_request(port: int, request: bytes) -> tuple[int | None, bytes]:
    """Send raw bytes (no client-side normalisation); (status, response bytes), status None if closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and len(data) > 8192:
                    break
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            return None, b""
    if not data:
        return None, b""
    return int(data.split(b" ", 2)[1]), data


def raw_status(port: int, request: bytes) -> int | None:
    return raw_request(port, request)[0]


NON_FINITE_BODIES = [
    ("/ratings", b'{"user_id": 42001, "movie_id": 1, "rating": NaN}'),
    ("/ratings", b'{"user_id": 42001, "movie_id": 1, "rating": Infinity}'),
    ("/ratings", b'{"user_id": 42001, "movie_id": 1, "rating": -Infinity}'),
    ("/ratings", b'{"user_id": 42001, "movie_id": 1, "rating": 1e400}'),
    ("/ratings", b'{"user_id": 42001, "movie_id": 1, "rating": 3, "rated_at": NaN}'),
    ("/ratings", b'[{"user_id": 42001, "movie_id": 1, "rating": 3}, {"user_id": NaN, "movie_id": 1, "rating": 3}]'),
    ("/predict", b'[{"user_id": 1, "movie_id": NaN}]'),
    ("/predict", b'[{"user_id": Infinity, "movie_id": 1}]'),
]


@pytest.mark.parametrize("path,raw", NON_FINITE_BODIES, ids=[b.decode()[:60] for _, b in NON_FINITE_BODIES])
def test_non_finite_json_numbers_are_a_clear_422(shared_server: Server, shared_stack: Stack, path: str,
                                                  raw: bytes) -> None:
    """Python's JSON parser accepts NaN, Infinity and 1e400 (-> inf). The request is invalid and must get
    a 422 naming the field -- not a 500 because the error response cannot echo the value as JSON."""
    r = httpx.post(shared_server.url + path, content=raw, headers={**KEY, "Content-Type": "application/json"},
                   timeout=30)
    assert r.status_code == 422, (r.status_code, r.text[:300])
    assert_no_leak(r)
    assert db_rows(shared_stack.db_url, "SELECT count(*) FROM ratings WHERE user_id = 42001")[0][0] == 0


def test_slow_clients_do_not_block_others(shared_server: Server) -> None:
    """A handful of connections that send half a request and stall must not stop service."""
    socks = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", shared_server.port), timeout=5)
            s.sendall(b"POST /ratings HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"user_id\":")
            socks.append(s)
        started = time.monotonic()
        r = httpx.get(shared_server.url + "/predict", params={"user_id": 1, "movie_id": 2}, timeout=10)
        assert r.status_code == 200 and time.monotonic() - started < 5
    finally:
        for s in socks:
            s.close()


# -- no traces -----------------------------------------------------------------------------------


def test_no_stack_traces_for_broken_requests(shared_server: Server) -> None:
    url = shared_server.url
    requests = [
        ("POST", "/ratings", b"{not json", {"Content-Type": "application/json", **KEY}),
        ("POST", "/ratings", b'{"user_id": "1", "movie_id": 1, "rating": 3}', {"Content-Type": "application/json", **KEY}),
        ("POST", "/ratings", b'{"user_id": 1, "movie_id": 99999, "rating": 3}', {"Content-Type": "application/json", **KEY}),
        ("POST", "/ratings", b'{"user_id": 1, "movie_id": 1, "rating": 3}', {"Content-Type": "text/plain", **KEY}),
        ("POST", "/predict", b"[{}]", {"Content-Type": "application/json"}),
        ("GET", "/predict?user_id=1&movie_id=" + "9" * 400, b"", {}),
        ("GET", "/predict?user_id=-1&movie_id=1", b"", {}),
        ("GET", "/recommend?user_id=1&min_year=abc", b"", {}),
        ("GET", "/movies/abc", b"", {}),
        ("GET", "/movies/99999/similar", b"", {}),
        ("GET", "/users/0/ratings", b"", {}),
        ("DELETE", "/users/1/ratings/99999", b"", KEY),
        ("PUT", "/ratings", b"{}", KEY),
        ("PATCH", "/predict", b"{}", {}),
        ("GET", "/model/files/..%2F..%2Fmanifest.json", b"", {}),
        ("GET", "/model/files/%00.png", b"", {}),
        ("GET", "/definitely/not/here", b"", {}),
        ("GET", "/predict?user_id=1&movie_id=1&user_id=x", b"", {}),
    ]
    with httpx.Client(timeout=30) as client:
        for method, path, body, headers in requests:
            r = client.request(method, url + path, content=body or None, headers=headers)
            assert r.status_code < 500, (method, path, r.status_code, r.text)
            assert_no_leak(r)
    record("security", "malformed and hostile requests, inspected for stack traces or internals", len(requests),
           "no 5xx, no trace, no SQL, no file paths in any body")


def test_no_stack_traces_when_the_database_is_broken(postgres_admin_url: str, tmp_path: Path) -> None:
    """A database without the schema: every request answers without a trace (503/4xx), never 500."""
    with fresh_postgres(postgres_admin_url, prefix="movierec_rel_noschema") as url:
        db_exec(url, "DROP TABLE ratings")  # the migrated schema loses a table
        store = tmp_path / "models"
        publish_synthetic(store)
        from .harness import child_env

        env = child_env(MOVIEREC_DATABASE_URL=url, MOVIEREC_MODEL_STORE=str(store), MOVIEREC_API_KEY="")
        with running_server(env, tmp_path / "work") as server, httpx.Client(timeout=30) as client:
            for method, path, body in (("GET", "/ready", None), ("GET", "/movies", None), ("GET", "/movies/1", None),
                                       ("POST", "/ratings", {"user_id": 1, "movie_id": 1, "rating": 3}),
                                       ("GET", "/recommend?user_id=1", None), ("GET", "/users/1/ratings", None),
                                       ("DELETE", "/users/1/ratings/1", None), ("GET", "/popular", None)):
                r = client.request(method, server.url + path, json=body)
                assert r.status_code < 500 or r.status_code == 503, (path, r.status_code, r.text)
                assert_no_leak(r)
                if r.status_code >= 400:
                    assert r.json().get("detail") or r.json().get("reasons"), r.text


# -- model store ---------------------------------------------------------------------------------

UNSAFE_LOADERS = re.compile(r"\b(pickle|cPickle|dill|joblib|marshal|shelve|torch\.load|yaml\.load|allow_pickle|np\.load|"
                            r"numpy\.load|eval\(|exec\()")


def test_model_loading_code_reads_only_safetensors_and_json() -> None:
    for path in [REPO_ROOT / "movierec" / "store.py", *sorted((REPO_ROOT / "app").rglob("*.py"))]:
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        tree = ast.parse(code)
        names = {n.names[0].name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                 and n.names} | {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"pickle", "dill", "joblib", "marshal", "shelve", "torch", "yaml"}, (path, names)
        executable = [ast.unparse(c) for c in _calls(tree, {"load", "loads", "eval", "exec"})
                      if not ast.unparse(c).startswith(("json.", "load_file(", "safetensors"))]
        for call in executable:
            assert not UNSAFE_LOADERS.search(call), f"{path.relative_to(REPO_ROOT)}: {call}"


def test_model_store_refuses_paths_outside_itself(tmp_path: Path, shared_server: Server) -> None:
    store = ModelStore(tmp_path / "models")
    publish_synthetic(store.root)
    for bad in (0, -1, "1", "../1", 1.0):
        with pytest.raises(StoreError):
            store.version_path(bad)  # type: ignore[arg-type]
    for name in ("..%2Fmanifest.json", "..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "model.safetensors",
                 "manifest.json", "..", ".lock", "x.png%2F..%2F..%2Fmanifest.json", "CURRENT", "../manifest.json",
                 "../../../../etc/passwd", "..%5c..%5cmanifest.json", "%2e%2e%2fmanifest.json", ".png", "a.png%00"):
        status, data = raw_request(shared_server.port, f"GET /model/files/{name} HTTP/1.1\r\nHost: a\r\n"
                                   "Connection: close\r\n\r\n".encode())
        assert status in (404, 422), (name, status, data[:300])
        assert b"root:" not in data and b"weights_sha256" not in data


# -- container -----------------------------------------------------------------------------------


def test_container_runs_as_non_root() -> None:
    dockerfile = REPO_ROOT / "Dockerfile"
    if not dockerfile.exists():
        pytest.fail("no Dockerfile at the repository root")
    lines = [line.strip() for line in dockerfile.read_text().splitlines()]
    stages = [i for i, line in enumerate(lines) if re.match(r"(?i)^FROM\s", line)]
    assert stages, "Dockerfile has no FROM"
    final = lines[stages[-1]:]
    users = [line.split(None, 1)[1].strip() for line in final if re.match(r"(?i)^USER\s", line)]
    assert users, "the final stage has no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"final USER is {users[-1]}"
    group = users[-1].split(":")[1] if ":" in users[-1] else None
    assert group not in ("root", "0"), f"final USER group is {users[-1]}"
    last_user = max(i for i, line in enumerate(final) if re.match(r"(?i)^USER\s", line))
    assert any(re.match(r"(?i)^(CMD|ENTRYPOINT)\s", line) for line in final[last_user:]), "CMD runs before USER"
    record("security", "Dockerfile final stage USER", 1, f"runs as {users[-1]} (non-root)")
