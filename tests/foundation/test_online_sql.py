"""The online metrics' SQL against a plain-Python reading of the rules, on random histories, on
SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from movierec.db.schema import MAX_SHOWN, Event, Impression, Movie, Rating, pack_movies, unpack_movies
from movierec.online import Period, online_report

MOVIES = 12
WINDOW = 100
K = 3

answers = st.lists(st.tuples(
    st.integers(1, 4),                      # user
    st.integers(1, 2),                      # version
    st.sampled_from(["model", "fold_in", "popularity"]),
    st.integers(0, 300),                    # time
    st.lists(st.integers(1, MOVIES), min_size=1, max_size=5, unique=True),
), max_size=12)
ratings = st.dictionaries(st.tuples(st.integers(1, 4), st.integers(1, MOVIES)),
                          st.tuples(st.sampled_from([1.0, 2.5, 4.0, 5.0]), st.integers(0, 450)), max_size=20)


def reference(shown: list[tuple[Any, ...]], rated: dict[tuple[int, int], tuple[float, int]],
              since: int, until: int) -> dict[int, dict[str, Any]]:
    """The rules of docs/online-metrics.md, read literally."""
    inside = [(f"r{i}", *a) for i, a in enumerate(shown) if since <= a[3] < until]
    outcomes = []  # (request, version, position, rating)
    for (user, movie), (rating, at) in rated.items():
        touches = [(t, rid, v, movies.index(movie)) for rid, u, v, _, t, movies in inside
                   if u == user and movie in movies and t <= at <= t + WINDOW]
        if touches:
            t, rid, v, position = max(touches)
            outcomes.append((rid, v, position, rating))
    out: dict[int, dict[str, Any]] = {}
    for rid, _, v, source, _, movies in inside:
        row = out.setdefault(v, {"n": 0, "personal": 0, "hits": set(), "ratings": [], "covered": set()})
        row["n"] += 1
        row["personal"] += source != "popularity"
        row["covered"] |= set(movies[:K])
    for rid, v, position, rating in outcomes:
        if position < K:
            out[v]["hits"].add(rid)
        out[v]["ratings"].append(rating)
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shown=answers, rated=ratings, since=st.integers(0, 150), length=st.integers(1, 300))
def test_sql_matches_the_rules(engine: Engine, shown: list[tuple[Any, ...]],
                               rated: dict[tuple[int, int], tuple[float, int]], since: int, length: int) -> None:
    with engine.begin() as conn:
        for table in ("events", "impressions", "ratings", "movies"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(insert(Movie), [{"id": m, "title": f"M{m}", "genres": ""} for m in range(1, MOVIES + 1)])
        if shown:
            conn.execute(insert(Impression), [
                {"request_id": f"r{i}", "user_id": u, "model_version": v, "source": s, "endpoint": "recommend",
                 "created_at": t, "movies": pack_movies(movies)} for i, (u, v, s, t, movies) in enumerate(shown)])
            conn.execute(insert(Event), [{"request_id": "r0", "movie_id": shown[0][4][0], "kind": "click",
                                          "occurred_at": shown[0][3]}])
        if rated:
            conn.execute(insert(Rating), [{"user_id": u, "movie_id": m, "rating": r, "rated_at": t}
                                          for (u, m), (r, t) in rated.items()])
    period = Period(since, since + length, k=K, window_s=WINDOW, bucket_s=50)
    with Session(engine) as session:
        report = online_report(session, period)
    expected = reference(shown, rated, since, since + length)
    assert {v.model_version for v in report.versions} == set(expected)
    for v in report.versions:
        want = expected[v.model_version]
        assert v.impressions == want["n"] and v.personalized.value == want["personal"] / want["n"]
        assert v.hit_impressions == len(want["hits"])
        assert v.mean_rating.n == len(want["ratings"])
        if want["ratings"]:
            assert abs(v.mean_rating.value - sum(want["ratings"]) / len(want["ratings"])) < 1e-9
        assert v.movies_shown == len(want["covered"]) and v.coverage == len(want["covered"]) / MOVIES
        assert sum(p["impressions"] for p in v.series) == want["n"]
        assert sum(p["hits"] for p in v.series) == len(want["hits"])
        clicked = 1 if shown and since <= shown[0][3] < since + length and shown[0][1] == v.model_version else 0
        assert round(v.click_rate.value * v.impressions) == clicked


def test_long_answers_and_the_largest_ids_are_read_at_every_position(engine: Engine) -> None:
    """An answer of MAX_SHOWN movies with ids up to 2^31 - 1: each position reads back its own movie."""
    top = 2**31 - 1
    movies = [top - p for p in range(MAX_SHOWN)]
    assert unpack_movies(pack_movies(movies)) == movies
    with engine.begin() as conn:
        for table in ("events", "impressions", "ratings", "movies"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(insert(Movie), [{"id": m, "title": f"M{m}", "genres": ""} for m in movies])
        conn.execute(insert(Impression), [
            {"request_id": "long", "user_id": 1, "model_version": 1, "source": "model", "endpoint": "recommend",
             "created_at": 10, "movies": pack_movies(movies)},
            {"request_id": "none", "user_id": 2, "model_version": 1, "source": "popularity", "endpoint": "recommend",
             "created_at": 10, "movies": ""}])
        # The last position and a middle one are rated by the user the answer was for.
        conn.execute(insert(Rating), [{"user_id": 1, "movie_id": movies[p], "rating": 4.0, "rated_at": 20}
                                      for p in (MAX_SHOWN - 1, 37)])
    with Session(engine) as session:
        report = online_report(session, Period(0, 100, k=MAX_SHOWN, window_s=WINDOW, bucket_s=50))
        at_37 = online_report(session, Period(0, 100, k=37, window_s=WINDOW, bucket_s=50))
    (version,) = report.versions
    assert version.impressions == 2 and version.movies_shown == MAX_SHOWN
    assert version.hit_impressions == 1 and version.mean_rating.n == 2
    assert at_37.versions[0].movies_shown == 37 and at_37.versions[0].hit_impressions == 0
