"""Issue 17: GET /recommend never shows a movie the user has just rated, whichever worker answers.

The ratings are read on every request (app/user_reads.py); this checks it on a live server with two
workers on PostgreSQL: ratings stored through the API (by either worker) and by another process
(dated long before the model's snapshot, which the workers' scan of new ratings cannot see) are
excluded by every answer that follows, on new connections spread over both workers.
"""

from __future__ import annotations

import httpx

from .conftest import API_KEY, Stack
from .harness import db_exec, record, running_server

USER = 7


def _recommended(url: str) -> list[int]:
    # A new connection each time: the kernel hands it to either worker.
    with httpx.Client(timeout=30, headers={"Connection": "close"}) as client:
        r = client.get(url + "/recommend", params={"user_id": USER, "n": 5})
        assert r.status_code == 200, r.text
        return [item["movie_id"] for item in r.json()["items"]]


def test_a_rating_is_excluded_at_once_by_every_worker(stack: Stack) -> None:
    with running_server(stack.env, stack.workdir, workers=2) as server:
        server.wait_for("/ready")
        rated = []
        for _ in range(3):
            top = _recommended(server.url)[0]
            r = httpx.post(server.url + "/ratings", json={"user_id": USER, "movie_id": top, "rating": 4.5},
                           headers={"X-API-Key": API_KEY, "Connection": "close"}, timeout=30)
            assert r.status_code == 201, r.text
            rated.append(top)
            for _ in range(10):  # no wait: the very next answers, from either worker
                assert top not in _recommended(server.url)
        # Another process, a rating dated 1970 (older than any snapshot): only a fresh read sees it.
        top = _recommended(server.url)[0]
        db_exec(stack.db_url, f"INSERT INTO ratings VALUES ({USER}, {top}, 3.0, 100) "
                "ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = 3.0, rated_at = 100")
        for _ in range(10):
            shown = _recommended(server.url)
            assert top not in shown and not set(rated) & set(shown)
    record("freshness", "2 workers: ratings through the API and one written elsewhere with a 1970 date", 4,
           "each excluded by the next 10 /recommend answers on new connections (both workers)")
