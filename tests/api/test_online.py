"""Outcomes, events and the online metrics, counted in SQL on SQLite and PostgreSQL alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from .helpers import publish_dot
from .test_impressions import MANUAL, _flush


@pytest.fixture
def online(seeded: Engine, store, make_client: Callable[..., TestClient]) -> TestClient:
    publish_dot(store, range(1, 21), range(1, 26))
    return make_client(**MANUAL)


def _shown(client: TestClient, user_id: int, n: int = 10) -> dict[str, Any]:
    body = client.get("/recommend", params={"user_id": user_id, "n": n}).json()
    _flush(client)
    return body


def _report(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/model/online", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _rate(client: TestClient, user_id: int, movie_id: int, rating: float, **extra: Any) -> None:
    response = client.post("/ratings", json={"user_id": user_id, "movie_id": movie_id, "rating": rating, **extra})
    assert response.status_code == 201, response.text


def test_a_rating_of_a_shown_movie_is_a_hit_with_its_rating(online: TestClient) -> None:
    shown = [_shown(online, user) for user in (1, 2, 3, 4)]
    _rate(online, 1, shown[0]["items"][2]["movie_id"], 4.5)
    _rate(online, 2, shown[1]["items"][0]["movie_id"], 3.0)
    _rate(online, 2, shown[1]["items"][1]["movie_id"], 2.0)
    unshown = next(m for m in range(1, 31) if m not in {i["movie_id"] for i in shown[2]["items"]}
                   and m not in {(3 + j) % 25 + 1 for j in range(5)})
    _rate(online, 3, unshown, 5.0)  # not shown: no hit
    version = _report(online)["versions"][0]
    assert version["model_version"] == 1 and version["impressions"] == 4
    assert version["hit_impressions"] == 2 and version["hit_rate"]["value"] == pytest.approx(0.5)
    low, high = version["hit_rate"]["low"], version["hit_rate"]["high"]
    assert 0 < low < 0.5 < high < 1  # Wilson at n = 4
    assert version["mean_rating"]["value"] == pytest.approx((4.5 + 3.0 + 2.0) / 3)
    assert version["mean_rating"]["n"] == 3 and version["mean_rating"]["low"] < 3.1667 < version["mean_rating"]["high"]
    assert version["personalized"]["value"] == 1.0
    shown_movies = {i["movie_id"] for s in shown for i in s["items"]}
    assert version["movies_shown"] == len(shown_movies)
    assert version["coverage"] == pytest.approx(len(shown_movies) / 30)
    assert sum(point["impressions"] for point in version["series"]) == 4
    assert sum(point["hits"] for point in version["series"]) == 2


def test_hits_count_in_the_first_k_only_and_ratings_before_the_answer_never(online: TestClient) -> None:
    shown = _shown(online, 5, n=20)
    _rate(online, 5, shown["items"][15]["movie_id"], 4.0)  # position 15: outside hit rate at 10
    assert _report(online)["versions"][0]["hit_impressions"] == 0
    assert _report(online, k=20)["versions"][0]["hit_impressions"] == 1
    assert _report(online)["versions"][0]["mean_rating"]["n"] == 1  # still a recommended-then-rated movie
    other = _shown(online, 6)
    _rate(online, 6, other["items"][0]["movie_id"], 4.0, rated_at=int(time.time()) - 3600)  # rated before it
    assert _report(online, k=20)["versions"][0]["hit_impressions"] == 1


def test_outside_the_window_is_no_hit(online: TestClient, seeded: Engine) -> None:
    shown = _shown(online, 7)
    with seeded.begin() as conn:  # the answer was given 8 days ago (default window: 7 days)
        conn.execute(text("UPDATE impressions SET created_at = created_at - 8 * 86400"))
    _rate(online, 7, shown["items"][0]["movie_id"], 5.0)
    version = _report(online, days=30)["versions"][0]
    assert version["impressions"] == 1 and version["hit_impressions"] == 0


def test_a_rating_counts_once_however_often_the_movie_was_shown(online: TestClient, seeded: Engine) -> None:
    first, second = _shown(online, 8), _shown(online, 8)
    with seeded.begin() as conn:  # two distinct moments
        conn.execute(text("UPDATE impressions SET created_at = created_at - 60 WHERE request_id = :r"),
                     {"r": first["request_id"]})
    movie = first["items"][0]["movie_id"]
    assert movie in {i["movie_id"] for i in second["items"]}
    _rate(online, 8, movie, 4.0)
    version = _report(online)["versions"][0]
    assert version["impressions"] == 2 and version["hit_impressions"] == 1  # the latest answer gets it
    assert version["mean_rating"]["n"] == 1


def test_the_period_selects_the_answers(online: TestClient) -> None:
    _shown(online, 9)
    now = int(time.time())
    assert _report(online, since=now - 3600, until=now + 5)["versions"][0]["impressions"] == 1
    assert _report(online, since=now - 7200, until=now - 3600)["versions"] == []
    assert online.get("/model/online", params={"since": now, "until": now - 5}).status_code == 422
    assert online.get("/model/online", params={"compare": "1;2"}).status_code == 422


# -- events ------------------------------------------------------------------------------------


def test_click_events_are_validated_and_counted_once(online: TestClient) -> None:
    shown = _shown(online, 10)
    rid, movie = shown["request_id"], shown["items"][0]["movie_id"]
    event = {"request_id": rid, "movie_id": movie, "kind": "click"}
    first = online.post("/events", json=event)
    assert first.status_code == 201 and first.json()["duplicate"] is False
    again = online.post("/events", json=event)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    batch = online.post("/events", json=[{**event, "kind": "view"}, {**event, "kind": "view"}, event])
    assert batch.status_code == 201 and [e["duplicate"] for e in batch.json()] == [False, True, True]
    other = _shown(online, 11)
    version = _report(online)["versions"][0]
    assert version["click_rate"]["value"] == pytest.approx(0.5) and version["click_rate"]["n"] == 2
    assert other["request_id"] != rid


def test_bad_events_are_refused_and_store_nothing(online: TestClient, seeded: Engine) -> None:
    shown = _shown(online, 12)
    rid, movie = shown["request_id"], shown["items"][0]["movie_id"]
    not_shown = next(m for m in range(1, 31) if m not in {i["movie_id"] for i in shown["items"]})
    now = int(time.time())
    cases = [
        ({"request_id": "0" * 32, "movie_id": movie, "kind": "click"}, 404),
        ({"request_id": rid, "movie_id": not_shown, "kind": "click"}, 422),
        ({"request_id": rid, "movie_id": movie, "kind": "click", "occurred_at": now + 3600}, 422),
        ({"request_id": rid, "movie_id": movie, "kind": "click", "occurred_at": now - 3600}, 422),
        ({"request_id": rid, "movie_id": movie, "kind": "click", "user_id": 13}, 422),
        ({"request_id": rid, "movie_id": movie, "kind": "like"}, 422),
        ({"request_id": "not an id!", "movie_id": movie, "kind": "click"}, 422),
        ([{"request_id": rid, "movie_id": movie, "kind": "view"},
          {"request_id": rid, "movie_id": not_shown, "kind": "view"}], 422),
    ]
    for body, code in cases:
        response = online.post("/events", json=body)
        assert response.status_code == code, (body, response.text)
    with seeded.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one() == 0
    ok = online.post("/events", json={"request_id": rid, "movie_id": movie, "kind": "view", "user_id": 12})
    assert ok.status_code == 201


def test_an_event_may_follow_its_answer_before_the_answer_is_written(online: TestClient) -> None:
    written = _shown(online, 15)
    body = online.get("/recommend", params={"user_id": 14}).json()  # still in the recorder's queue
    # An event about a written answer while another one waits, then one about the waiting answer.
    for answer in (written, body):
        response = online.post("/events", json={"request_id": answer["request_id"],
                                                "movie_id": answer["items"][0]["movie_id"], "kind": "click"})
        assert response.status_code == 201, response.text


def test_events_need_the_api_key(seeded: Engine, store, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, range(1, 21), range(1, 26))
    client = make_client(**MANUAL, api_key="s3cret")
    body = _shown(client, 3)
    event = {"request_id": body["request_id"], "movie_id": body["items"][0]["movie_id"], "kind": "click"}
    assert client.post("/events", json=event).status_code == 401
    assert client.post("/events", json=event, headers={"X-API-Key": "s3cret"}).status_code == 201


def test_versions_are_reported_side_by_side_with_a_test(
        seeded: Engine, store, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, range(1, 21), range(1, 26), seed=1)
    client = make_client(**MANUAL)
    for user in range(1, 11):
        body = _shown(client, user)
        _rate(client, user, body["items"][0]["movie_id"], 4.0)  # every answer of version 1 is a hit
    publish_dot(store, range(1, 21), range(1, 26), seed=2)
    client.post("/admin/reload")
    for user in range(11, 21):
        assert _shown(client, user)["model_version"] == 2  # no hits
    report = _report(client)
    assert [v["model_version"] for v in report["versions"]] == [1, 2]
    assert [v["hit_rate"]["value"] for v in report["versions"]] == [1.0, 0.0]
    test = report["comparison"]["hit_rate"]
    assert report["comparison"]["a"] == 1 and report["comparison"]["b"] == 2
    assert test["difference"] == 1.0 and test["significant"] is True and test["p_value"] < 0.001
