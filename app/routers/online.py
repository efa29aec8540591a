"""Online metrics per model version (GET /model/online) and events about answers (POST /events)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Response, status

from movierec.online import Period, online_report

from ..deps import RecorderDep, RegistryDep, SessionDep, SettingsDep
from ..events import EventRow, InvalidEventError, UnknownRequestError, known_requests, store_events
from ..limits import enforce_batch_limit
from ..schemas import BODY_ERRORS, Digits, EventBatch, EventIn, EventOut
from ..security import require_api_key

router = APIRouter(responses=BODY_ERRORS, tags=["online metrics"])

#: The longest period one report may span (the series has at most this / bucket points).
MAX_PERIOD_DAYS = 3660
MAX_POINTS = 2000


@router.post(
    "/events", status_code=status.HTTP_201_CREATED, response_model=EventOut | list[EventOut],
    dependencies=[Depends(require_api_key), Depends(enforce_batch_limit)],
    responses={200: {"description": "A single event that was already stored (duplicate: true)"},
               401: {"description": "Missing or wrong X-API-Key"}, 404: {"description": "Unknown request id"},
               422: {"description": "Invalid event: movie not shown, wrong user, before the answer or in the future"}},
)
def post_events(
    session: SessionDep,
    recorder: RecorderDep,
    response: Response,
    body: Annotated[EventIn | EventBatch, Body(
        description="One event or a list (checked and stored in one transaction: all or nothing).",
        examples=[{"request_id": "3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b", "movie_id": 50, "kind": "click"}])],
) -> dict[str, object] | list[dict[str, object]]:
    """Record clicks or views of movies shown in an answer, named by its ``request_id``.

    A repeat of a stored (request, movie, kind) is answered with ``duplicate: true`` and not
    stored or counted again (a single duplicate answers 200 instead of 201).
    """
    single = isinstance(body, EventIn)
    items = [body] if single else body
    if not items:
        return []
    now = int(time.time())
    rows = [EventRow(e.request_id, e.movie_id, e.kind, e.user_id, e.occurred_at if e.occurred_at is not None else now)
            for e in items]
    ids = sorted({r.request_id for r in rows})
    if recorder.pending:
        # The answer may still wait in the recorder's queue (events can follow an answer at once).
        missing = len(known_requests(session, ids)) < len(ids)
        session.rollback()  # end the read's transaction: the write below begins its own
        if missing:
            recorder.flush()
    try:
        duplicates = store_events(session, rows)
    except UnknownRequestError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except InvalidEventError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    out = [{"request_id": r.request_id, "movie_id": r.movie_id, "kind": r.kind, "occurred_at": r.occurred_at,
            "duplicate": d} for r, d in zip(rows, duplicates, strict=True)]
    if single:
        if out[0]["duplicate"]:
            response.status_code = status.HTTP_200_OK
        return out[0]
    return out


@router.get("/model/online", responses={422: {"description": "Invalid period"},
                                        503: {"description": "Database unavailable"}})
def model_online(
    session: SessionDep,
    settings: SettingsDep,
    registry: RegistryDep,
    days: Annotated[float, Query(gt=0, le=MAX_PERIOD_DAYS, description="Period: the last this many days")] = 7,
    since: Annotated[Digits | None, Query(ge=0, le=2**62, description="Period start, Unix seconds "
                                                                      "(overrides days)")] = None,
    until: Annotated[Digits | None, Query(ge=0, le=2**62, description="Period end (exclusive), Unix seconds; "
                                                                      "default now")] = None,
    k: Annotated[Digits, Query(ge=1, le=100, description="Hit rate at k")] = 10,
    bucket: Annotated[Digits | None, Query(ge=60, le=MAX_PERIOD_DAYS * 86400,
                                           description="Seconds per point of the series; default: the period / 48")] = None,
    compare: Annotated[str | None, Query(pattern=r"^\d{1,10},\d{1,10}$", description="Two versions to test, "
                                         "'a,b'; default: current and candidate, else the two busiest")] = None,
) -> dict[str, object]:
    """Online metrics of every model version that answered /recommend in the period.

    Hit rate at k, mean rating of recommended-then-rated movies, catalogue coverage, share of
    personalised answers and click rate, with 95 % confidence intervals, a series over time, and
    a two-proportion z-test of two versions' hit rates. See docs/online-metrics.md for the rules.
    """
    end = until if until is not None else int(time.time()) + 1
    start = since if since is not None else end - int(days * 86400)
    if end <= start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "until must come after since")
    if (end - start) > MAX_PERIOD_DAYS * 86400:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"the period may span at most {MAX_PERIOD_DAYS} days")
    step = bucket if bucket is not None else max(60, (end - start) // 48)
    if (end - start) / step > MAX_POINTS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"at most {MAX_POINTS} points per series")
    current = registry.model.version if registry.model is not None else None
    candidate = registry.candidate
    pair: list[int] | None = None
    if compare is not None:
        pair = [int(v) for v in compare.split(",")]
    elif candidate is not None and current is not None:
        pair = sorted([current, candidate.pointer.version])
    period = Period(start, end, k=k, window_s=int(settings.hit_window_days * 86400), bucket_s=step)
    report = online_report(session, period, pair)
    return {**report.to_dict(), "current_version": current,
            "candidate": ({"version": candidate.pointer.version, "share": candidate.pointer.share}
                          if candidate is not None else None),
            "candidate_error": registry.candidate_error}
