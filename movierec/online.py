"""Online metrics per model version, counted in SQL over the recorded impressions and the ratings.

What counts (documented in docs/online-metrics.md):

* an **impression** is one answer of ``/recommend`` (``/movies/{id}/similar`` answers are recorded
  too, for events, but have no user and are not counted here);
* a rating is an **outcome** of the latest impression that showed that movie to that user before
  the rating, when the rating came at most ``window_s`` seconds after it (last-touch attribution,
  computed at report time: so a rating counts once however often the movie was shown, and the
  window can be changed after the fact);
* **hit rate at k**: the share of impressions with at least one outcome among their first ``k``
  movies (Wilson interval);
* **mean rating**: of the recommended-then-rated movies, any position (t interval);
* **coverage**: distinct movies shown in the first ``k`` positions / movies in the catalogue;
* **personalised share**: impressions answered by the model or fold-in, not popularity (Wilson);
* **click rate**: impressions with at least one ``click`` event (Wilson).

Every figure is one aggregate query, the same text on SQLite and PostgreSQL (window functions,
a recursive list of positions, substrings and integer arithmetic only). Times are Unix seconds, half-open periods ``[since, until)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from .db.schema import SHOWN_ID_DIGITS
from .stats import Estimate, ZTest, mean_interval, two_proportion_z, wilson

#: Impressions of the period, recommend answers only.
_SHOWN = """
    SELECT i.request_id, i.user_id, i.model_version, i.created_at, i.source, i.movies
    FROM impressions i
    WHERE i.endpoint = 'recommend' AND i.created_at >= :since AND i.created_at < :until
"""

#: Positions 0, 1, ... up to the longest answer of the period: the prefix of every query that reads
#: the movies of impressions. Bounded by the data, not by MAX_SHOWN: every impression is joined
#: with every position, and answers of 10 movies joined with 100 positions made the report 3.5 x slower.
_POSITIONS = f"""
    WITH RECURSIVE positions(position) AS (
        SELECT 0 UNION ALL SELECT position + 1 FROM positions
        WHERE (position + 1) * {SHOWN_ID_DIGITS} < (SELECT MAX(LENGTH(i.movies)) FROM impressions i
                                                   WHERE i.created_at >= :since AND i.created_at < :until))
"""

#: The movies shown by the period's impressions, a row per (impression, position): each answer's
#: ``movies`` holds the ids in fixed-width digits (movierec.db.schema.pack_movies), so the movie
#: at a position is a substring, read the same way on SQLite and PostgreSQL.
_ITEMS = f"""
    SELECT s.request_id, s.user_id, s.model_version, s.created_at, p.position,
           CAST(SUBSTR(s.movies, p.position * {SHOWN_ID_DIGITS} + 1, {SHOWN_ID_DIGITS}) AS INTEGER) AS movie_id
    FROM ({_SHOWN}) s JOIN positions p ON p.position * {SHOWN_ID_DIGITS} < LENGTH(s.movies)
"""

#: Each rating attributed to the latest impression of the period that showed the movie to that
#: user before it, within the window.
_OUTCOMES = f"""
    SELECT request_id, model_version, bucket, position, rating FROM (
        SELECT it.request_id, it.model_version, (it.created_at - :since) / :bucket AS bucket, it.position, r.rating,
               ROW_NUMBER() OVER (PARTITION BY it.user_id, it.movie_id
                                  ORDER BY it.created_at DESC, it.request_id DESC) AS touch
        FROM ({_ITEMS}) it
        JOIN ratings r ON r.user_id = it.user_id AND r.movie_id = it.movie_id
        WHERE r.rated_at >= it.created_at AND r.rated_at <= it.created_at + :window
    ) attributed
    WHERE touch = 1
"""

_PER_VERSION = f"""
    SELECT model_version, COUNT(*), SUM(CASE WHEN source <> 'popularity' THEN 1 ELSE 0 END)
    FROM ({_SHOWN}) s GROUP BY model_version
"""

_HITS = f"""{_POSITIONS}
    SELECT model_version, COUNT(DISTINCT CASE WHEN position < :k THEN request_id END),
           COUNT(*), SUM(rating), SUM(rating * rating)
    FROM ({_OUTCOMES}) o GROUP BY model_version
"""

_COVERAGE = f"""{_POSITIONS}
    SELECT model_version, COUNT(DISTINCT movie_id)
    FROM ({_ITEMS}) it
    WHERE position < :k GROUP BY model_version
"""

_CLICKS = f"""
    SELECT s.model_version, COUNT(DISTINCT e.request_id)
    FROM ({_SHOWN}) s JOIN events e ON e.request_id = s.request_id
    WHERE e.kind = 'click' GROUP BY s.model_version
"""

_SERIES_SHOWN = f"""
    SELECT model_version, (created_at - :since) / :bucket AS bucket, COUNT(*)
    FROM ({_SHOWN}) s GROUP BY model_version, (created_at - :since) / :bucket
"""

_SERIES_HITS = f"""{_POSITIONS}
    SELECT model_version, bucket, COUNT(DISTINCT request_id)
    FROM ({_OUTCOMES}) o WHERE position < :k GROUP BY model_version, bucket
"""


@dataclass(frozen=True)
class Period:
    """What to count: impressions in ``[since, until)``, hits at ``k``, outcomes within ``window_s``,
    the series in buckets of ``bucket_s`` seconds."""

    since: int
    until: int
    k: int = 10
    window_s: int = 7 * 86400
    bucket_s: int = 86400

    def __post_init__(self) -> None:
        if self.until <= self.since:
            raise ValueError("the period's end must come after its start")
        if self.k < 1 or self.window_s < 0 or self.bucket_s < 1:
            raise ValueError("k and the bucket must be positive and the window not negative")

    def params(self) -> dict[str, int]:
        return {"since": self.since, "until": self.until, "k": self.k, "window": self.window_s,
                "bucket": self.bucket_s}


@dataclass
class VersionMetrics:
    """The online metrics of one model version over a period."""

    model_version: int | None
    impressions: int
    hit_impressions: int
    hit_rate: Estimate
    mean_rating: Estimate
    coverage: float | None
    movies_shown: int
    personalized: Estimate
    click_rate: Estimate
    series: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "impressions": self.impressions,
                "hit_impressions": self.hit_impressions, "hit_rate": self.hit_rate.to_dict(),
                "mean_rating": self.mean_rating.to_dict(), "coverage": self.coverage,
                "movies_shown": self.movies_shown, "personalized": self.personalized.to_dict(),
                "click_rate": self.click_rate.to_dict(), "series": self.series}


@dataclass
class Comparison:
    """Version ``a`` against version ``b`` on hit rate at k."""

    a: int | None
    b: int | None
    test: ZTest | None

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "hit_rate": self.test.to_dict() if self.test is not None else None}


@dataclass
class OnlineReport:
    """Every version's metrics over one period, and the comparison of two of them."""

    period: Period
    catalogue_size: int
    versions: list[VersionMetrics]
    comparison: Comparison | None

    def to_dict(self) -> dict[str, Any]:
        p = self.period
        return {"since": p.since, "until": p.until, "k": p.k, "window_s": p.window_s, "bucket_s": p.bucket_s,
                "catalogue_size": self.catalogue_size, "versions": [v.to_dict() for v in self.versions],
                "comparison": self.comparison.to_dict() if self.comparison is not None else None}

    def version(self, model_version: int | None) -> VersionMetrics | None:
        return next((v for v in self.versions if v.model_version == model_version), None)


def online_report(session: Session, period: Period, compare: Sequence[int] | None = None) -> OnlineReport:
    """Count the online metrics of every model version that answered in ``period``.

    ``compare`` names the two versions to test against each other (default: the two with the most
    impressions, when there are two).
    """
    params = period.params()

    def rows(sql: str) -> list[Any]:
        return list(session.execute(text(sql), params).all())

    shown = {v: (int(n), int(p or 0)) for v, n, p in rows(_PER_VERSION)}
    hits = {v: (int(h), int(n), float(s or 0), float(sq or 0)) for v, h, n, s, sq in rows(_HITS)}
    coverage = {v: int(c) for v, c in rows(_COVERAGE)}
    clicks = {v: int(c) for v, c in rows(_CLICKS)}
    series_hits = {(v, int(b)): int(h) for v, b, h in rows(_SERIES_HITS)}
    series: dict[int | None, list[dict[str, Any]]] = {}
    for v, b, n in sorted(rows(_SERIES_SHOWN), key=lambda r: (r[0] is None, r[0] or 0, r[1])):
        h = series_hits.get((v, int(b)), 0)
        rate = wilson(h, int(n))
        series.setdefault(v, []).append({"start": period.since + int(b) * period.bucket_s, "impressions": int(n),
                                         "hits": h, "hit_rate": rate.to_dict()})
    catalogue = int(session.execute(text("SELECT COUNT(*) FROM movies")).scalar_one())

    versions = []
    for v, (n, personal) in sorted(shown.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        hit_impressions, rated, total, total_sq = hits.get(v, (0, 0, 0.0, 0.0))
        distinct = coverage.get(v, 0)
        versions.append(VersionMetrics(
            model_version=v, impressions=n, hit_impressions=hit_impressions, hit_rate=wilson(hit_impressions, n),
            mean_rating=mean_interval(rated, total, total_sq), coverage=distinct / catalogue if catalogue else None,
            movies_shown=distinct, personalized=wilson(personal, n), click_rate=wilson(clicks.get(v, 0), n),
            series=series.get(v, [])))
    return OnlineReport(period, catalogue, versions, _compare(versions, compare))


def _compare(versions: list[VersionMetrics], compare: Sequence[int] | None) -> Comparison | None:
    if compare is not None:
        if len(compare) != 2:
            raise ValueError("compare needs exactly two versions")
        a, b = compare
    else:
        ranked = sorted((v for v in versions if v.model_version is not None), key=lambda v: -v.impressions)
        if len(ranked) < 2:
            return None
        a, b = sorted((ranked[0].model_version, ranked[1].model_version))  # type: ignore[type-var]
    by_version = {v.model_version: v for v in versions}
    va, vb = by_version.get(a), by_version.get(b)
    test = None
    if va is not None and vb is not None:
        test = two_proportion_z(va.hit_impressions, va.impressions, vb.hit_impressions, vb.impressions)
    return Comparison(a, b, test)
