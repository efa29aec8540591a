"""Issue 13's findings, checked in process on SQLite and PostgreSQL: hostile bodies get a small,
capped 422; future timestamps are refused; lone surrogates are no 500; the pages carry security
headers and /docs loads nothing from elsewhere; HEAD and 405 are right; search folds any script;
``genre`` means the same everywhere. (Live-server checks: tests/reliability/test_hardening.py.)"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select

from app.main import MAX_ERRORS_SHOWN
from movierec.db.schema import MAX_FUTURE_SKEW_S, Movie, Rating

JSON = {"content-type": "application/json"}


def _post(client: TestClient, path: str, raw: bytes) -> tuple[int, bytes]:
    response = client.post(path, content=raw, headers=JSON)
    return response.status_code, response.content


# -- hostile bodies ------------------------------------------------------------------------------------------

HOSTILE_BODIES = {
    "1 MB of [1,1,...]": b"[" + b"1," * 500_000 + b"1]",
    "80 KB of [1,1,...]": b"[" + b"1," * 40_000 + b"1]",
    "an object with 50 000 unknown fields": json.dumps({f"k{i}": 0 for i in range(50_000)}).encode(),
    "one field holding 200 000 values": json.dumps({"user_id": [1] * 200_000, "movie_id": 1}).encode(),
    "a 900 KB string": json.dumps({"user_id": "x" * 900_000, "movie_id": 1}).encode(),
    "the batch limit of bad items": json.dumps([{"user_id": "a", "movie_id": "b", "z": 1}] * 1000).encode(),
}


@pytest.mark.parametrize("path", ["/predict", "/ratings"])
@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
def test_hostile_bodies_get_a_small_capped_422(client: TestClient, seeded: Engine, path: str, name: str) -> None:
    """Before: a 1 MB [1,1,...] made a 70 MB 422 listing 500 000 errors, after 28 s on the event loop."""
    status, body = _post(client, path, HOSTILE_BODIES[name])
    assert status == 422, (name, status, body[:300])
    assert len(body) < 8_000, f"{name}: a {len(body)}-byte error response"
    detail = json.loads(body)["detail"]
    assert 1 <= len(detail) <= MAX_ERRORS_SHOWN + 1
    assert all(error["msg"] and isinstance(error["loc"], list) for error in detail)
    with seeded.connect() as conn:
        assert conn.execute(select(Rating).where(Rating.rated_at > 10_000)).first() is None


def test_unknown_fields_are_one_error_naming_a_few(client: TestClient) -> None:
    body = {"user_id": 1, "movie_id": 2, **{f"extra{i}": i for i in range(30)}}
    detail = client.post("/predict", json=[body]).json()["detail"]
    assert [e["type"] for e in detail] == ["extra_forbidden"]
    assert "'extra0'" in detail[0]["msg"] and "and 25 more" in detail[0]["msg"]


def test_error_list_is_capped_with_a_count_of_the_rest() -> None:
    from app.main import validation_errors

    errors = [{"type": "missing", "loc": ("body", i, "user_id"), "msg": "Field required", "input": {}}
              for i in range(500)]
    shown = validation_errors(errors)
    assert len(shown) == MAX_ERRORS_SHOWN + 1
    assert shown[-1]["type"] == "too_many_errors" and shown[-1]["ctx"]["not_shown"] == 500 - MAX_ERRORS_SHOWN
    big = validation_errors([{"type": "x", "loc": ("body",), "msg": "m", "input": "y" * 10_000,
                              "ctx": {"error": ValueError("z" * 10_000)}}])
    assert len(json.dumps(big)) < 1_000


# -- surrogates and other hostile text ---------------------------------------------------------------------------

SURROGATE_BODIES = [
    b'{"user_id": 1, "movie_id": 1, "rating": "\\udfff"}',
    b'{"user_id": 1, "movie_id": 1, "rating": 4, "\\ud800": 1}',
    b'[{"user_id": "\\udfff\\u202e\\u0000", "movie_id": 1}]',
    b'{"\\udfff": "\\ud83d"}',
    b'"\\udfff"',
]


@pytest.mark.parametrize("path", ["/predict", "/ratings"])
@pytest.mark.parametrize("raw", SURROGATE_BODIES, ids=[b.decode()[:40] for b in SURROGATE_BODIES])
def test_lone_surrogates_are_a_422_not_a_500(client: TestClient, path: str, raw: bytes) -> None:
    """Before: UnicodeEncodeError while rendering the 422 that echoed the string: a 500 with a traceback."""
    status, body = _post(client, path, raw)
    assert status == 422, (status, body[:300])
    body.decode("utf-8")  # valid UTF-8, the surrogate replaced


# -- timestamps --------------------------------------------------------------------------------------------


def test_future_rated_at_is_refused(client: TestClient, seeded: Engine) -> None:
    now = int(time.time())
    for rated_at in (2**62, now + 3600, now + MAX_FUTURE_SKEW_S + 60):
        r = client.post("/ratings", json={"user_id": 3, "movie_id": 4, "rating": 4, "rated_at": rated_at})
        assert r.status_code == 422 and "future" in r.text, (rated_at, r.text)
        r = client.post("/ratings", json=[{"user_id": 3, "movie_id": 4, "rating": 4, "rated_at": rated_at}])
        assert r.status_code == 422, rated_at
    with seeded.connect() as conn:
        assert conn.execute(select(Rating).where(Rating.rated_at > now)).first() is None
    ok = client.post("/ratings", json={"user_id": 3, "movie_id": 4, "rating": 4, "rated_at": now + 10})
    assert ok.status_code == 201


# -- browser security --------------------------------------------------------------------------------------


def _csp(response: object) -> dict[str, str]:
    header = response.headers["content-security-policy"]  # type: ignore[attr-defined]
    return {part.split()[0]: part.strip() for part in header.split(";") if part.strip()}


@pytest.mark.parametrize("path", ["/", "/model.html", "/docs"])
def test_pages_have_a_strict_csp_and_security_headers(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = _csp(r)
    assert csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"]
    assert csp["object-src"] == "object-src 'none'"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    # No inline script (the CSP would block it) and nothing from another origin.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text), "inline <script>"
    assert not re.search(r"(src|href)=[\"'](https?:)?//", r.text), "a resource from another origin"


def test_docs_are_served_from_vendored_swagger_ui(client: TestClient) -> None:
    page = client.get("/docs").text
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", page)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        r = client.get("/" + asset)
        assert r.status_code == 200 and len(r.content) > 100, asset
    assert client.get("/js/docs.js").status_code == 200
    assert client.get("/redoc").status_code == 404  # ReDoc came from a CDN: not served
    assert client.get("/openapi.json").headers["x-content-type-options"] == "nosniff"


# -- methods and metrics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/movies", "/movies/1", "/popular", "/", "/docs", "/openapi.json"])
def test_head_wherever_get_is_allowed(client: TestClient, path: str) -> None:
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code == 200, (path, head.status_code)
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]


@pytest.mark.parametrize("method,path,allow", [
    ("PUT", "/ratings", {"POST"}), ("OPTIONS", "/ratings", {"POST"}), ("PATCH", "/predict", {"GET", "HEAD", "POST"}),
    ("POST", "/health", {"GET", "HEAD"}), ("DELETE", "/movies/1", {"GET", "HEAD"}),
])
def test_wrong_method_is_405_with_the_api_allow_header(client: TestClient, method: str, path: str,
                                                       allow: set[str]) -> None:
    r = client.request(method, path)
    assert r.status_code == 405, (method, path, r.status_code)
    assert {m.strip() for m in r.headers["allow"].split(",")} == allow


def test_head_is_not_a_documented_operation(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert all("head" not in operations for operations in paths.values())


def test_metrics_label_pages_and_docs(client: TestClient) -> None:
    for path in ("/", "/model.html", "/docs", "/docs/assets/swagger-ui.css", "/no/such/page"):
        client.get(path)
    text = client.get("/metrics").text
    labels = set(re.findall(r'movierec_http_requests_total\{method="GET",route="([^"]*)",status="(\d+)"', text))
    assert {("static", "200"), ("/docs", "200"), ("/docs/assets/{path}", "200"), ("unmatched", "404")} <= labels
    assert ("unmatched", "200") not in labels


# -- search and genre --------------------------------------------------------------------------------------


def test_search_folds_case_in_any_script(client: TestClient, seeded: Engine) -> None:
    """Before: on SQLite, lower() folded ASCII only: 'Á köldum' did not find its own stored title."""
    with seeded.begin() as conn:
        conn.execute(insert(Movie), [{"id": 901, "title": "Á köldum klaka", "year": 1995, "genres": "Drama"},
                                     {"id": 902, "title": "ΣΟΦΙΑ", "year": 2001, "genres": "Comedy"}])
    for query, expected in (("Á köldum", 901), ("á KÖLDUM", 901), ("köldum", 901), ("σοφια", 902), ("ΣοΦια", 902)):
        items = client.get("/movies", params={"query": query}).json()["items"]
        assert [m["movie_id"] for m in items] == [expected], (query, items)


def test_genre_means_any_of_the_listed_genres_everywhere(client: TestClient) -> None:
    """Before: genre=comedy|drama matched movies whose genres contained 'Comedy|Drama' on /movies and
    nothing on /popular and /recommend."""
    def genres_of(items: list[dict]) -> list[set[str]]:
        return [{g.lower() for g in m["genres"]} for m in items]

    listed = client.get("/movies", params={"genre": "comedy|DRAMA", "limit": 100}).json()
    comedy = client.get("/movies", params={"genre": "Comedy", "limit": 100}).json()["total"]
    drama = client.get("/movies", params={"genre": "drama", "limit": 100}).json()["total"]
    assert max(comedy, drama) < listed["total"] <= comedy + drama
    assert all(g & {"comedy", "drama"} for g in genres_of(listed["items"]))
    for path, params in (("/popular", {"n": 100}), ("/recommend", {"user_id": 5, "n": 100}),
                         ("/recommend", {"user_id": 999_999, "n": 100})):
        items = client.get(path, params={**params, "genre": "Comedy|drama"}).json()["items"]
        assert items and all(g & {"comedy", "drama"} for g in genres_of(items)), (path, params)
        seen = set().union(*genres_of(items))
        assert {"comedy", "drama"} <= seen, (path, seen)
    assert client.get("/movies", params={"genre": "|"}).json()["total"] == 30  # no genre named: no filter


def test_importer_refuses_future_timestamps_with_file_and_line(engine: Engine, tmp_path: Path) -> None:
    from movierec.data.importer import import_ratings
    from movierec.data.movielens import DataFormatError

    with engine.begin() as conn:
        conn.execute(insert(Movie), [{"id": 1, "title": "A", "year": 2000, "genres": ""}])
    path = tmp_path / "ratings.csv"
    future = int(time.time()) + 3600
    path.write_text(f"userId,movieId,rating,timestamp\n1,1,4.0,{int(time.time())}\n2,1,3.0,{future}\n")
    with pytest.raises(DataFormatError) as error:
        import_ratings(engine, path)
    assert "ratings.csv:3:" in str(error.value) and "future" in str(error.value)
    with engine.connect() as conn:
        assert conn.execute(select(Rating)).first() is None


# -- watermark, snapshot, server options ------------------------------------------------------------------


def test_a_far_future_row_does_not_move_the_watermark(client: TestClient, seeded: Engine) -> None:
    """Two registries on one database stand for two workers: a rating dated 2^62 (stored before such
    dates were refused) must not hide a later, normal rating from the one that did not write it."""
    from app.metrics import Metrics
    from app.model_registry import ModelRegistry
    from movierec.db.engine import session_factory

    registry = ModelRegistry(client.app.state.settings.model_store, session_factory(seeded), Metrics())
    registry.reload()
    with seeded.begin() as conn:
        conn.execute(insert(Rating), [{"user_id": 3, "movie_id": 1, "rating": 4.0, "rated_at": 2**62}])
    registry.refresh_stale()
    assert registry.state is not None and 3 in registry.state.stale_users
    assert registry.state.watermark is not None and registry.state.watermark <= time.time()
    with seeded.begin() as conn:
        conn.execute(insert(Rating), [{"user_id": 4, "movie_id": 2, "rating": 2.0, "rated_at": int(time.time())}])
    registry.refresh_stale()
    assert 4 in registry.state.stale_users


def test_trainer_snapshot_ignores_future_ratings() -> None:
    import numpy as np

    from trainer.data import Ratings

    now = int(time.time())
    data = Ratings(user=np.array([0, 0, 1]), movie=np.array([0, 1, 0]), rating=np.array([4.0, 3.0, 5.0], np.float32),
                   rated_at=np.array([now - 100, 2**62, now - 50]), user_ids=np.array([1, 2]),
                   movie_ids=np.array([1, 2]))
    assert data.snapshot() == {"ratings": 3, "max_rated_at": now - 50}


def test_serve_passes_the_slow_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from app import cli
    from app.server import LimitedHttpToolsProtocol
    from movierec.settings import Settings, get_settings

    for name, value in (("HEADER_TIMEOUT", "3"), ("BODY_TIMEOUT", "4"), ("KEEP_ALIVE_TIMEOUT", "2"),
                        ("LIMIT_CONCURRENCY", "77")):
        monkeypatch.setenv(f"MOVIEREC_{name}", value)
    get_settings.cache_clear()
    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    try:
        cli.serve(host="127.0.0.1", port=8000, workers=1, access_log=False)
        settings = get_settings()
    finally:
        get_settings.cache_clear()
    assert calls[0]["timeout_keep_alive"] == 2 and calls[0]["limit_concurrency"] == 77
    assert calls[0]["http"] is LimitedHttpToolsProtocol
    assert (settings.header_timeout, settings.body_timeout) == (3, 4)
    for name in ("HEADER_TIMEOUT", "BODY_TIMEOUT", "KEEP_ALIVE_TIMEOUT", "LIMIT_CONCURRENCY"):
        monkeypatch.delenv(f"MOVIEREC_{name}")
    defaults = Settings(_env_file=None)
    assert 0 < defaults.header_timeout <= 30 and 0 < defaults.body_timeout <= 60
    assert defaults.keep_alive_timeout <= 10 and defaults.limit_concurrency >= 300


def test_bodies_over_the_json_value_budget_are_refused_unparsed(client: TestClient) -> None:
    """Parsing 1 MB of JSON holds the event loop for tens of milliseconds whatever follows: bodies
    with far more values (or string escapes) than MOVIEREC_MAX_BATCH items need are refused as they
    stream in, chunked or not."""
    for raw in (b"[" + b"{}," * 100_000 + b"{}]", b'["' + b"\\u0041" * 100_000 + b'"]'):
        chunks = iter([raw[i:i + 65536] for i in range(0, len(raw), 65536)])
        for content in (raw, chunks):
            r = client.post("/predict", content=content, headers=JSON)
            assert r.status_code == 422 and "JSON values" in r.text, (raw[:20], r.text[:200])
