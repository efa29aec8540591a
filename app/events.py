"""Events (clicks, views) about recorded answers: checked against the impression, stored once.

An event names an answer by its request id and a movie that answer showed. Refused (the whole
request, nothing stored): an unknown request id (404), a movie the answer did not show, a user who
is not the one the answer was for, a time before the answer or in the future (422). A repeat of a
stored (request, movie, kind) is not an error -- clients retry -- but it is not stored or counted
again: it comes back with ``duplicate: true``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from movierec.db.schema import Event, Impression, unpack_movies

from .repository import write_transaction


class UnknownRequestError(LookupError):
    """No recorded answer has this request id."""


class InvalidEventError(ValueError):
    """The event contradicts the answer it names; the message says how."""


@dataclass(frozen=True)
class EventRow:
    request_id: str
    movie_id: int
    kind: str
    user_id: int | None
    occurred_at: int


def known_requests(session: Session, request_ids: Sequence[str]) -> set[str]:
    """Which of ``request_ids`` are recorded."""
    return set(session.execute(select(Impression.request_id).where(Impression.request_id.in_(set(request_ids))))
               .scalars())


def store_events(session: Session, events: Sequence[EventRow]) -> list[bool]:
    """Check and store ``events`` in one transaction; per event, True if it was a duplicate."""
    request_ids = sorted({e.request_id for e in events})
    with write_transaction(session):
        answers = {r: (u, t, set(unpack_movies(m))) for r, u, t, m in session.execute(
            select(Impression.request_id, Impression.user_id, Impression.created_at, Impression.movies)
            .where(Impression.request_id.in_(request_ids)))}
        missing = [r for r in request_ids if r not in answers]
        if missing:
            raise UnknownRequestError(f"unknown request id(s): {', '.join(missing[:5])}")
        for e in events:
            user, created, shown = answers[e.request_id]
            if e.movie_id not in shown:
                raise InvalidEventError(f"movie {e.movie_id} was not shown in request {e.request_id}")
            if e.user_id is not None and e.user_id != user:
                raise InvalidEventError(f"request {e.request_id} was not for user {e.user_id}")
            if e.occurred_at < created:
                raise InvalidEventError(f"occurred_at {e.occurred_at} is before request {e.request_id} "
                                        f"was answered ({created})")
        keys = {(e.request_id, e.movie_id, e.kind) for e in events}
        stored = set(tuple(row) for row in session.execute(select(Event.request_id, Event.movie_id, Event.kind).where(
            tuple_(Event.request_id, Event.movie_id, Event.kind).in_(sorted(keys)))))
        duplicates, rows, seen = [], [], set()
        for e in events:
            key = (e.request_id, e.movie_id, e.kind)
            duplicates.append(key in stored or key in seen)
            if not duplicates[-1]:
                seen.add(key)
                rows.append({"request_id": e.request_id, "movie_id": e.movie_id, "kind": e.kind,
                             "occurred_at": e.occurred_at})
        if rows:
            insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
            # A concurrent request may store the same event between the read and here: DO NOTHING.
            session.execute(insert(Event).on_conflict_do_nothing(
                index_elements=[Event.request_id, Event.movie_id, Event.kind]), rows)
    return duplicates
