"""Typed ORM models of the ratings database: the one definition both programs use.

``rated_at`` is Unix epoch seconds (UTC), as MovieLens ships it: portable across SQLite and
PostgreSQL, cheap to bulk-load and to stream into the trainer. Ratings are stars in 0.5 steps
from 0.5 to 5.0, enforced by a CHECK constraint so no writer can slip a bad one in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Constraint names are fixed so that migrations look the same on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MIN_RATING = 0.5
MAX_RATING = 5.0
RATING_STEP = 0.5
#: How far past the checking machine's clock a ``rated_at`` may lie (clock skew between hosts).
#: A later timestamp is refused by the API and the importer: one rating dated in the far future
#: would otherwise outrank every real one in "newest first" and in the data snapshot.
MAX_FUTURE_SKEW_S = 300


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Movie(Base):
    """A movie of the catalogue. ``genres`` is pipe-separated, as in MovieLens (``Comedy|Drama``)."""

    __tablename__ = "movies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String(512))
    year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    genres: Mapped[str] = mapped_column(Text, default="", server_default="")

    __table_args__ = (CheckConstraint("id > 0", name="positive_id"),)


class Rating(Base):
    """One user's rating of one movie; a re-rating replaces it (primary key user_id, movie_id)."""

    __tablename__ = "ratings"

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    movie_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("movies.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    rating: Mapped[float] = mapped_column(Float)
    rated_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("user_id > 0", name="positive_user_id"),
        CheckConstraint(
            f"rating >= {MIN_RATING} AND rating <= {MAX_RATING} AND rating * 2 = CAST(rating * 2 AS INTEGER)",
            name="half_star_rating",
        ),
        # Popularity and "who rated this movie" (similar, popular, cold start) scan by movie.
        Index("ix_ratings_movie_id", "movie_id"),
        # The trainer's data snapshot (max rated_at) and per-user time splits.
        Index("ix_ratings_rated_at", "rated_at"),
    )


#: Request ids are 32 hex digits (``app.impressions.new_request_id``); the column leaves room for a client's own.
REQUEST_ID_LENGTH = 64
#: What an impression records as its endpoint and source, and the kinds of events.
IMPRESSION_ENDPOINTS = ("recommend", "similar")
IMPRESSION_SOURCES = ("model", "fold_in", "popularity")
EVENT_KINDS = ("click", "view")


#: Digits of each movie id in ``impressions.movies``: ids are positive 32-bit integers.
SHOWN_ID_DIGITS = 10
#: The most movies one impression records (``/recommend`` and ``/similar`` answer at most 100).
MAX_SHOWN = 100


def pack_movies(movie_ids: Sequence[int]) -> str:
    """``impressions.movies`` of an answer: each id in :data:`SHOWN_ID_DIGITS` zero-padded digits, in order.

    Fixed-width digits let the same SQL read the movie at a position on SQLite and PostgreSQL
    (``CAST(SUBSTR(movies, position * 10 + 1, 10) AS INTEGER)``, see :mod:`movierec.online`).
    """
    return ("%010d" * len(movie_ids)) % tuple(movie_ids)


def unpack_movies(movies: str) -> list[int]:
    """The movie ids of ``impressions.movies``, in their positions (the inverse of :func:`pack_movies`)."""
    return [int(movies[i:i + SHOWN_ID_DIGITS]) for i in range(0, len(movies), SHOWN_ID_DIGITS)]


class Impression(Base):
    """One answer of ``/recommend`` or ``/movies/{id}/similar``: who asked, which version answered, what it showed.

    ``created_at`` is Unix seconds like ``ratings.rated_at``, so the hit window is one comparison
    of two integers on both backends. ``user_id`` is NULL for ``similar`` (no user asked).
    ``movies`` holds the movies shown, in order (:func:`pack_movies`): one row per answer instead
    of one per movie (the ``impression_items`` table until migration 0004) cut the writer's
    CPU per answer of 10 movies about threefold, and every query reads the movies of an answer
    together anyway.
    """

    __tablename__ = "impressions"

    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    movies: Mapped[str] = mapped_column(String(MAX_SHOWN * SHOWN_ID_DIGITS), default="", server_default="")

    __table_args__ = (
        # The online report and the retention prune scan a period. Nothing looks impressions up by
        # user (outcomes are found from the period's impressions), so there is no index on user_id:
        # migration 0004 dropped it, a third of the writer's remaining CPU (users arrive in no order).
        Index("ix_impressions_created_at", "created_at"),
    )


class Event(Base):
    """A click or view of a movie shown in an impression; one per (request, movie, kind)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(REQUEST_ID_LENGTH), ForeignKey("impressions.request_id", ondelete="CASCADE"))
    movie_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        # A repeated event is the same event: the unique key makes a retry harmless.
        UniqueConstraint("request_id", "movie_id", "kind", name="uq_events_request_movie_kind"),
        Index("ix_events_occurred_at", "occurred_at"),
    )


def is_valid_rating(value: float) -> bool:
    """True for 0.5, 1.0, ..., 5.0 — the values the CHECK constraint admits."""
    return MIN_RATING <= value <= MAX_RATING and float(value * 2).is_integer()


def latest_valid_timestamp(now: float | None = None) -> int:
    """The newest ``rated_at`` accepted now: the clock plus :data:`MAX_FUTURE_SKEW_S`."""
    return int(time.time() if now is None else now) + MAX_FUTURE_SKEW_S
