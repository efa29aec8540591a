"""Impressions: every /recommend and /similar answer gets a request id and is recorded off the
request path, in batches, bounded, dropped (and counted) on a database failure, pruned by age."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from movierec.db.schema import unpack_movies

from .helpers import publish_dot

#: The writer thread never flushes on its own in these tests: each test flushes when it wants to.
MANUAL = {"impressions_flush_ms": 3_600_000, "impressions_batch_rows": 10_000}


def _flush(client: TestClient) -> int:
    return client.app.state.recorder.flush()  # type: ignore[attr-defined]


def _metric(client: TestClient, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_recommend_answer_is_recorded_with_its_items_in_order(
        seeded: Engine, store, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, range(1, 21), range(1, 26))
    client = make_client(**MANUAL)
    response = client.get("/recommend", params={"user_id": 3, "n": 5})
    assert response.status_code == 200
    body = response.json()
    assert response.headers["X-Request-ID"] == body["request_id"] and len(body["request_id"]) == 32
    assert response.headers["X-Model-Version"] == "1" and body["served_by"] == "current"
    assert _flush(client) == 1
    with seeded.connect() as conn:
        row = conn.execute(text("SELECT user_id, model_version, source, endpoint, created_at, movies FROM impressions "
                                "WHERE request_id = :r"), {"r": body["request_id"]}).one()
    assert tuple(row[:4]) == (3, 1, body["source"], "recommend")
    assert abs(row[4] - time.time()) < 60
    assert unpack_movies(row[5]) == [item["movie_id"] for item in body["items"]]
    assert int(body["request_id"][:12], 16) // 1000 == row[4]  # one clock reading for the id and the row
    assert _metric(client, "movierec_impressions_recorded_total") == 1


def test_every_answer_has_its_own_request_id_and_popularity_answers_are_recorded(
        seeded: Engine, store, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, range(1, 21), range(1, 26))
    client = make_client(**MANUAL)
    ids = {client.get("/recommend", params={"user_id": 5}).json()["request_id"] for _ in range(3)}
    unknown = client.get("/recommend", params={"user_id": 999}).json()
    assert unknown["source"] == "popularity" and len(ids) == 3
    similar = client.get("/movies/4/similar", params={"n": 3})
    assert similar.headers["X-Request-ID"] == similar.json()["request_id"]
    assert _flush(client) == 5
    with seeded.connect() as conn:
        rows = {r: s for r, s in conn.execute(text("SELECT request_id, source FROM impressions"))}
        similar_row = conn.execute(text("SELECT user_id, endpoint FROM impressions WHERE request_id = :r"),
                                   {"r": similar.json()["request_id"]}).one()
    assert rows[unknown["request_id"]] == "popularity"
    assert tuple(similar_row) == (None, "similar")


def test_recording_off_writes_nothing_but_answers_keep_their_ids(
        seeded: Engine, store, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, range(1, 21), range(1, 26))
    client = make_client(record_impressions=False)
    body = client.get("/recommend", params={"user_id": 3}).json()
    assert len(body["request_id"]) == 32
    assert _flush(client) == 0
    with seeded.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM impressions")).scalar_one() == 0


def test_queue_is_bounded_and_drops_are_counted(
        seeded: Engine, store, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, range(1, 21), range(1, 26))
    client = make_client(**MANUAL, impressions_queue_size=2)
    for _ in range(5):
        assert client.get("/recommend", params={"user_id": 3}).status_code == 200
    assert _metric(client, 'movierec_impressions_dropped_total{reason="queue_full"}') == 3
    assert _flush(client) == 2


def test_batch_size_wakes_the_writer(seeded: Engine, store, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, range(1, 21), range(1, 26))
    client = make_client(impressions_flush_ms=3_600_000, impressions_batch_rows=3)
    for _ in range(3):
        client.get("/recommend", params={"user_id": 3})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _metric(client, "movierec_impressions_recorded_total") < 3:
        time.sleep(0.05)
    assert _metric(client, "movierec_impressions_recorded_total") == 3


def test_database_failure_drops_the_batch_and_never_fails_recommend(
        seeded: Engine, store, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, range(1, 21), range(1, 26))
    client = make_client(**MANUAL)
    with seeded.begin() as conn:  # the writes of the recorder now fail in the database itself
        conn.execute(text("ALTER TABLE impressions RENAME TO impressions_away"))
    try:
        for _ in range(4):
            assert client.get("/recommend", params={"user_id": 3}).status_code == 200
        assert _flush(client) == 0
        assert _metric(client, 'movierec_impressions_dropped_total{reason="database"}') == 4
    finally:
        with seeded.begin() as conn:
            conn.execute(text("ALTER TABLE impressions_away RENAME TO impressions"))
    with seeded.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM impressions")).scalar_one() == 0  # nothing half-written
    client.get("/recommend", params={"user_id": 3})
    assert _flush(client) == 1


def test_retention_prunes_old_impressions_with_their_events(
        seeded: Engine, store, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, range(1, 21), range(1, 26))
    client = make_client(**MANUAL, impressions_retention_days=1)
    old = client.get("/recommend", params={"user_id": 3}).json()
    new = client.get("/recommend", params={"user_id": 4}).json()
    _flush(client)
    assert client.post("/events", json={"request_id": old["request_id"], "movie_id": old["items"][0]["movie_id"],
                                        "kind": "click"}).status_code == 201
    with seeded.begin() as conn:
        conn.execute(text("UPDATE impressions SET created_at = created_at - 2 * 86400 WHERE request_id = :r"),
                     {"r": old["request_id"]})
    assert client.app.state.recorder.prune() == 1  # type: ignore[attr-defined]
    with seeded.connect() as conn:
        assert conn.execute(text("SELECT request_id FROM impressions")).scalars().all() == [new["request_id"]]
        assert conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one() == 0


def test_a_batch_of_any_size_is_written_whole_and_in_order(
        seeded: Engine, store, make_client: Callable[..., TestClient]) -> None:
    """SQLite writes a batch as multi-row INSERTs of 128, 64, ... 1 rows: 301 = 128 + 128 + 32 + 8 + 4 + 1."""
    from app.impressions import Shown

    publish_dot(store, range(1, 21), range(1, 26))
    client = make_client(**MANUAL)
    recorder = client.app.state.recorder  # type: ignore[attr-defined]
    shown = [Shown(f"batch{i:04d}", i, 1, "model", "recommend", 1000 + i, [i + 1, i + 2]) for i in range(301)]
    for s in shown:
        recorder.record(s)
    assert _flush(client) == 301
    with seeded.connect() as conn:
        rows = conn.execute(text("SELECT request_id, user_id, created_at, movies FROM impressions "
                                 "WHERE request_id LIKE 'batch%' ORDER BY request_id")).all()
    assert [(r, u, t, unpack_movies(m)) for r, u, t, m in rows] == \
        [(s.request_id, s.user_id, s.created_at, list(s.movie_ids)) for s in shown]
