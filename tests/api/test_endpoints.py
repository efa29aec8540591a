"""Every endpoint through HTTP (TestClient) against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from movierec.db.schema import Rating
from movierec.store import ModelStore

from .conftest import MODEL_MOVIES
from .helpers import publish_dot, seed_ratings


def _expected_rating(store: Path, user_row: int | None, movie_row: int) -> float:
    t = ModelStore(store).load().tensors
    logit = 0.3 + t["movie_bias"][movie_row]
    if user_row is not None:
        logit += t["user_factors"][user_row] @ t["movie_factors"][movie_row] + t["user_bias"][user_row]
    return float(np.clip(5.5 / (1 + math.exp(-logit)), 0.5, 5.0))


# -- predict ---------------------------------------------------------------------------------------


def test_predict_known_user_follows_the_model(client: TestClient, store: Path) -> None:
    body = client.get("/predict", params={"user_id": 4, "movie_id": 7}).json()
    assert body["model_version"] == 1 and body["personalized"] is True
    assert body["rating"] == pytest.approx(_expected_rating(store, 3, 6), rel=1e-5)


def test_predict_unknown_user_without_ratings_is_the_baseline(client: TestClient, store: Path) -> None:
    body = client.get("/predict", params={"user_id": 777, "movie_id": 7}).json()
    assert body["personalized"] is False
    assert body["rating"] == pytest.approx(_expected_rating(store, None, 6), rel=1e-5)


@pytest.mark.parametrize(("movie_id", "fragment"), [(99, "not found"), (28, "not in model version 1")])
def test_predict_unknown_movie_is_404(client: TestClient, movie_id: int, fragment: str) -> None:
    response = client.get("/predict", params={"user_id": 1, "movie_id": movie_id})
    assert response.status_code == 404
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize("params", [{"user_id": 0, "movie_id": 1}, {"user_id": -3, "movie_id": 1},
                                    {"user_id": 1, "movie_id": "x"}, {"user_id": 2**40, "movie_id": 1}, {"user_id": 1}])
def test_predict_rejects_bad_ids(client: TestClient, params: dict[str, object]) -> None:
    assert client.get("/predict", params=params).status_code == 422


def test_batch_predict_matches_single_predictions_in_order(client: TestClient) -> None:
    pairs = [{"user_id": u, "movie_id": m} for u, m in [(3, 9), (777, 2), (3, 1), (20, 25), (1, 9)]]
    batch = client.post("/predict", json=pairs)
    assert batch.status_code == 200
    singles = [client.get("/predict", params=p).json() for p in pairs]
    assert [(b["user_id"], b["movie_id"]) for b in batch.json()] == [(p["user_id"], p["movie_id"]) for p in pairs]
    for b, s in zip(batch.json(), singles, strict=True):
        assert b["rating"] == pytest.approx(s["rating"], rel=1e-6)
        assert b["personalized"] == s["personalized"]


def test_batch_predict_limits(make_client: Callable[..., TestClient], seeded: Engine, store: Path) -> None:
    publish_dot(store, range(1, 21), MODEL_MOVIES)
    client = make_client(max_batch=3)
    assert client.post("/predict", json=[]).json() == []
    too_many = client.post("/predict", json=[{"user_id": 1, "movie_id": 1}] * 4)
    assert too_many.status_code == 422 and "at most 3" in too_many.json()["detail"][0]["msg"]
    # The batch size is checked before the items: four invalid items give that one error, not four.
    invalid = client.post("/predict", json=[1, 2, 3, 4]).json()["detail"]
    assert [(e["type"], e["loc"]) for e in invalid] == [("too_long", ["body"])], invalid
    assert client.post("/predict", json=[{"user_id": 1, "movie_id": 99}]).status_code == 404
    assert client.post("/predict", json=[{"user_id": True, "movie_id": 1}]).status_code == 422
    assert client.post("/predict", content=b"[{", headers={"content-type": "application/json"}).status_code == 422


# -- recommend -------------------------------------------------------------------------------------


def _rated(engine: Engine, user_id: int) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(select(Rating.movie_id).where(Rating.user_id == user_id)).scalars())


def test_recommend_ranks_unrated_movies_by_the_model(client: TestClient, seeded: Engine, store: Path) -> None:
    body = client.get("/recommend", params={"user_id": 5, "n": 7}).json()
    assert body["personalized"] is True and body["source"] == "model" and body["model_version"] == 1
    t = ModelStore(store).load().tensors
    scores = t["movie_factors"] @ t["user_factors"][4] + t["rank_bias"]
    rated = _rated(seeded, 5)
    expected = [int(t["movie_ids"][r]) for r in np.argsort(-scores) if int(t["movie_ids"][r]) not in rated][:7]
    assert [item["movie_id"] for item in body["items"]] == expected
    assert body["items"][0]["title"] == f"Movie {expected[0]}" and isinstance(body["items"][0]["genres"], list)


def test_recommend_filters(client: TestClient) -> None:
    base = client.get("/recommend", params={"user_id": 5, "n": 100}).json()["items"]
    assert all(item["movie_id"] <= 25 for item in base)  # movies 26..30 are unknown to the model
    comedy = client.get("/recommend", params={"user_id": 5, "n": 100, "genre": "comedy"}).json()["items"]
    assert comedy and all("Comedy" in item["genres"] for item in comedy)
    assert [i["movie_id"] for i in comedy] == [i["movie_id"] for i in base if "Comedy" in i["genres"]]
    recent = client.get("/recommend", params={"user_id": 5, "n": 100, "min_year": 2000}).json()["items"]
    assert recent and all(item["year"] >= 2000 for item in recent)
    first_two = [base[0]["movie_id"], base[1]["movie_id"]]
    excluded = client.get("/recommend", params=[("user_id", 5), ("exclude", f"{first_two[0]},{first_two[1]}")]).json()
    assert not set(first_two) & {i["movie_id"] for i in excluded["items"]}
    assert client.get("/recommend", params={"user_id": 5, "genre": "Western"}).json()["items"] == []


@pytest.mark.parametrize("params", [{"user_id": 5, "n": 0}, {"user_id": 5, "n": 101}, {"user_id": 0},
                                    {"user_id": 5, "exclude": "a,b"}, {"user_id": 5, "exclude": "-1"}])
def test_recommend_rejects_bad_parameters(client: TestClient, params: dict[str, object]) -> None:
    response = client.get("/recommend", params=params)
    assert response.status_code == 422 and "detail" in response.json()


def test_new_user_gets_personalised_after_rating_without_retrain(client: TestClient) -> None:
    before = client.get("/recommend", params={"user_id": 4242, "n": 10}).json()
    assert before["personalized"] is False and before["source"] == "popularity"
    ratings = [{"user_id": 4242, "movie_id": m, "rating": r} for m, r in [(3, 5), (8, 4.5), (12, 1), (17, 0.5)]]
    assert client.post("/ratings", json=ratings).status_code == 201
    after = client.get("/recommend", params={"user_id": 4242, "n": 10}).json()
    assert after["personalized"] is True and after["source"] == "fold_in"
    ids = [item["movie_id"] for item in after["items"]]
    assert not {3, 8, 12, 17} & set(ids)
    assert ids != [item["movie_id"] for item in before["items"]]
    predicted = client.get("/predict", params={"user_id": 4242, "movie_id": 3}).json()
    assert predicted["personalized"] is True
    # The fold-in follows the ratings: the 5-star movie is predicted above the half-star one.
    low = client.get("/predict", params={"user_id": 4242, "movie_id": 17}).json()
    assert predicted["rating"] > low["rating"]


def test_known_user_who_rated_after_the_snapshot_is_folded_in(client: TestClient, seeded: Engine) -> None:
    assert client.get("/recommend", params={"user_id": 6}).json()["source"] == "model"
    seed_ratings(seeded, [(6, 20, 5.0, 5_000)])  # written by another process, newer than the snapshot
    assert client.get("/recommend", params={"user_id": 6}).json()["source"] == "fold_in"


def test_rating_stored_elsewhere_with_an_old_date_is_excluded_at_once(client: TestClient, seeded: Engine) -> None:
    """/recommend reads the user's ratings on every request: a rating another process stored a moment ago is
    never recommended back, even dated before the model's snapshot (which no scan of new ratings would notice)."""
    top = client.get("/recommend", params={"user_id": 7, "n": 3}).json()["items"][0]["movie_id"]
    seed_ratings(seeded, [(7, top, 4.0, 10)])
    again = client.get("/recommend", params={"user_id": 7, "n": 3}).json()
    assert top not in [item["movie_id"] for item in again["items"]]
    with seeded.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM ratings WHERE user_id = 7 AND movie_id = {top}")
    assert client.get("/recommend", params={"user_id": 7, "n": 3}).json()["items"][0]["movie_id"] == top


def test_unknown_user_with_no_ratings_gets_popularity_with_filters(client: TestClient) -> None:
    body = client.get("/recommend", params={"user_id": 31337, "n": 5, "genre": "Drama"}).json()
    assert body["personalized"] is False and body["model_version"] == 1
    assert body["items"] and all("Drama" in item["genres"] for item in body["items"])


def test_recommend_without_a_model_falls_back_to_popularity(seeded: Engine, make_client: Callable[..., TestClient]
                                                            ) -> None:
    client = make_client()
    body = client.get("/recommend", params={"user_id": 1}).json()
    assert body == {**body, "personalized": False, "model_version": None, "source": "popularity"}
    assert body["items"]
    assert client.get("/predict", params={"user_id": 1, "movie_id": 1}).status_code == 503


# -- ratings ---------------------------------------------------------------------------------------


def test_post_rating_then_rerate_updates(client: TestClient, seeded: Engine) -> None:
    first = client.post("/ratings", json={"user_id": 500, "movie_id": 2, "rating": 3.5, "rated_at": 1234})
    assert first.status_code == 201
    assert first.json() == {"user_id": 500, "movie_id": 2, "rating": 3.5, "rated_at": 1234}
    second = client.post("/ratings", json={"user_id": 500, "movie_id": 2, "rating": 1})
    assert second.status_code == 201 and second.json()["rating"] == 1.0 and second.json()["rated_at"] > 1234
    listed = client.get("/users/500/ratings").json()
    assert listed == [second.json()]


@pytest.mark.parametrize("rating", [0, 0.25, 4.3, 5.5, -1, "4", True, None])
def test_invalid_ratings_are_422(client: TestClient, seeded: Engine, rating: object) -> None:
    response = client.post("/ratings", json={"user_id": 500, "movie_id": 2, "rating": rating})
    assert response.status_code == 422
    assert _rated(seeded, 500) == set()


def test_rating_list_is_all_or_nothing(client: TestClient, seeded: Engine) -> None:
    body = [{"user_id": 501, "movie_id": 1, "rating": 4}, {"user_id": 501, "movie_id": 999, "rating": 4}]
    response = client.post("/ratings", json=body)
    assert response.status_code == 404 and "999" in response.json()["detail"]
    assert _rated(seeded, 501) == set()
    invalid = [{"user_id": 501, "movie_id": 1, "rating": 4}, {"user_id": 501, "movie_id": 2, "rating": 7}]
    assert client.post("/ratings", json=invalid).status_code == 422
    assert _rated(seeded, 501) == set()


def test_rating_list_with_repeated_key_keeps_the_last(client: TestClient, seeded: Engine) -> None:
    body = [{"user_id": 502, "movie_id": 1, "rating": 4, "rated_at": 10},
            {"user_id": 502, "movie_id": 2, "rating": 2, "rated_at": 10},
            {"user_id": 502, "movie_id": 1, "rating": 0.5, "rated_at": 11}]
    response = client.post("/ratings", json=body)
    assert response.status_code == 201
    assert sorted((r["movie_id"], r["rating"]) for r in response.json()) == [(1, 0.5), (2, 2.0)]
    assert sorted((r["movie_id"], r["rating"]) for r in client.get("/users/502/ratings").json()) == [(1, 0.5), (2, 2.0)]


def test_rating_bad_json_and_extra_fields(client: TestClient) -> None:
    bad = client.post("/ratings", content=b'{"user_id": 1,', headers={"content-type": "application/json"})
    assert bad.status_code == 422
    assert client.post("/ratings", json={"user_id": 1, "movie_id": 1, "rating": 4, "admin": True}).status_code == 422
    assert client.post("/ratings", json={"user_id": 1, "movie_id": 1, "rating": 4, "rated_at": -5}).status_code == 422


def test_delete_rating(client: TestClient, seeded: Engine) -> None:
    movie = sorted(_rated(seeded, 3))[0]
    assert client.delete(f"/users/3/ratings/{movie}").status_code == 204
    assert movie not in _rated(seeded, 3)
    missing = client.delete(f"/users/3/ratings/{movie}")
    assert missing.status_code == 404 and "no rating" in missing.json()["detail"]
    # The user changed their ratings: recommendations now come from the remaining ones.
    assert client.get("/recommend", params={"user_id": 3}).json()["source"] == "fold_in"


def test_ratings_pagination_and_empty_user(client: TestClient) -> None:
    assert client.get("/users/9999/ratings").json() == []
    page = client.get("/users/1/ratings", params={"limit": 2, "offset": 1}).json()
    full = client.get("/users/1/ratings").json()
    assert len(full) == 5 and page == full[1:3]
    assert [r["rated_at"] for r in full] == sorted((r["rated_at"] for r in full), reverse=True)


# -- api key, body limit, CORS ---------------------------------------------------------------------


def test_writes_need_the_api_key(seeded: Engine, store: Path, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, range(1, 21), MODEL_MOVIES)
    client = make_client(api_key="s3cret")
    rating = {"user_id": 600, "movie_id": 1, "rating": 4}
    assert client.post("/ratings", json=rating).status_code == 401
    assert client.post("/ratings", json=rating, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.delete("/users/1/ratings/2").status_code == 401
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/ratings", json=rating, headers={"X-API-Key": "s3cret"}).status_code == 201
    # Reads stay open.
    assert client.get("/recommend", params={"user_id": 600}).status_code == 200
    assert client.get("/users/600/ratings").status_code == 200
    assert client.post("/predict", json=[{"user_id": 1, "movie_id": 1}]).status_code == 200


def test_oversized_bodies_are_413(seeded: Engine, store: Path, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, range(1, 21), MODEL_MOVIES)
    client = make_client(max_body_bytes=2048)
    before = _rated(seeded, 1)
    big = [{"user_id": 1, "movie_id": m, "rating": 4} for m in range(1, 31)] * 4
    response = client.post("/ratings", json=big)
    assert response.status_code == 413 and "2048" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        yield b"["
        for _ in range(200):
            yield b'{"user_id": 1, "movie_id": 1},'
        yield b'{"user_id": 1, "movie_id": 1}]'

    streamed = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert _rated(seeded, 1) == before  # nothing written


def test_cors(seeded: Engine, make_client: Callable[..., TestClient]) -> None:
    client = make_client(cors_origins=["https://movies.example"])
    ok = client.get("/health", headers={"Origin": "https://movies.example"})
    assert ok.headers["access-control-allow-origin"] == "https://movies.example"
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# -- movies ----------------------------------------------------------------------------------------


def test_movie_search_and_details(client: TestClient) -> None:
    page = client.get("/movies", params={"query": "MOVIE 2", "limit": 5}).json()
    assert page["total"] == 11 and [m["movie_id"] for m in page["items"]] == [2, 20, 21, 22, 23]
    page2 = client.get("/movies", params={"query": "movie 2", "limit": 5, "offset": 5}).json()
    assert [m["movie_id"] for m in page2["items"]] == [24, 25, 26, 27, 28]
    drama = client.get("/movies", params={"genre": "drama", "limit": 100}).json()
    assert drama["total"] > 0 and all("Drama" in m["genres"] for m in drama["items"])
    assert client.get("/movies", params={"query": "%"}).json()["total"] == 0  # LIKE wildcards are escaped
    detail = client.get("/movies/5").json()
    assert detail["title"] == "Movie 5" and detail["in_model"] is True and detail["ratings_count"] >= 1
    assert client.get("/movies/28").json()["in_model"] is False
    assert client.get("/movies/999").status_code == 404
    assert client.get("/movies/0").status_code == 422
    assert client.get("/movies", params={"limit": 0}).status_code == 422


def test_similar_movies(client: TestClient, store: Path) -> None:
    body = client.get("/movies/4/similar", params={"n": 5}).json()
    f = ModelStore(store).load().tensors["movie_factors"]
    cos = f @ f[3] / (np.linalg.norm(f, axis=1) * np.linalg.norm(f[3]))
    cos[3] = -np.inf
    assert [i["movie_id"] for i in body["items"]] == [int(r) + 1 for r in np.argsort(-cos)[:5]]
    assert client.get("/movies/28/similar").status_code == 404
    assert client.get("/movies/999/similar").status_code == 404
    assert client.get("/movies/4/similar", params={"n": 101}).status_code == 422


def test_popular_is_a_damped_mean(client: TestClient, seeded: Engine) -> None:
    # Movie 30 gets one perfect rating; a damped mean must not put it first.
    seed_ratings(seeded, [(700, 30, 5.0, 10)])
    client.post("/admin/reload")  # also refreshes the popularity cache
    items = client.get("/popular", params={"n": 30}).json()["items"]
    assert items[0]["movie_id"] != 30
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    assert all(i["ratings_count"] >= 1 for i in items)
    assert all("Comedy" in i["genres"] for i in client.get("/popular", params={"genre": "Comedy"}).json()["items"])


# -- operations ------------------------------------------------------------------------------------


def test_health_ready_model_and_files(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "database": True, "model_version": 1, "reasons": []}
    info = client.get("/model").json()
    assert info["version"] == 1 and info["metrics"] == {"rmse": 0.9} and info["files"] == ["loss.png"]
    assert info["baseline_metrics"] == {"rmse": 1.0}
    png = client.get("/model/files/loss.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    for bad in ("..%2Fmanifest.json", "manifest.json", "nope.png", "..%2F..%2Fetc%2Fpasswd"):
        assert client.get(f"/model/files/{bad}").status_code == 404


def test_ready_without_a_model_says_why(seeded: Engine, make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["database"] is True and "no model loaded" in response.json()["reasons"][0]
    assert client.get("/model").status_code == 503


def test_metrics_per_route_template(client: TestClient) -> None:
    client.get("/movies/3")
    client.get("/movies/4")
    client.get("/nowhere/at/all")
    text = client.get("/metrics").text
    assert 'movierec_http_requests_total{method="GET",route="/movies/{movie_id}",status="200"} 2.0' in text
    assert 'route="/movies/3"' not in text
    assert "movierec_model_version 1.0" in text
    assert 'movierec_model_reloads_total{result="success"} 1.0' in text
    assert "movierec_http_request_duration_seconds_bucket" in text


def test_openapi_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/predict", "/recommend", "/ratings", "/users/{user_id}/ratings", "/users/{user_id}/ratings/{movie_id}",
                 "/movies", "/movies/{movie_id}", "/movies/{movie_id}/similar", "/popular", "/health", "/ready",
                 "/metrics", "/model", "/model/files/{name}", "/admin/reload"):
        assert path in spec["paths"], path
    assert "examples" in str(spec["paths"]["/ratings"])


def test_static_front_end_is_served_after_the_api(client: TestClient) -> None:
    static = Path(__file__).resolve().parents[2] / "app" / "static" / "index.html"
    if not static.is_file():
        pytest.skip("no app/static/index.html in this checkout")
    response = client.get("/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert client.get("/health").json() == {"status": "ok"}  # the mount does not shadow the API


def test_no_ratings_table_scan_per_popular_request(client: TestClient, seeded: Engine) -> None:
    first = client.get("/popular").json()
    seed_ratings(seeded, [(800 + i, 30, 5.0, 10) for i in range(200)])
    assert client.get("/popular").json() == first  # served from the cache until the next refresh
    with seeded.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Rating)).scalar_one() == 300
