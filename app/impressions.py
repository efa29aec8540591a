"""Recording what the service showed: impressions, written off the request path in batches.

A request hands its answer to :meth:`ImpressionRecorder.record` (an append under a lock, no I/O)
and gets a request id back. A background thread writes what is waiting every
``MOVIEREC_IMPRESSIONS_FLUSH_MS`` milliseconds, or sooner once ``MOVIEREC_IMPRESSIONS_BATCH_ROWS``
impressions wait, in one transaction per batch. The queue is bounded
(``MOVIEREC_IMPRESSIONS_QUEUE_SIZE``): when the writer falls behind, new impressions are dropped and
counted, so memory never grows without limit; when the database fails, the batch is dropped and
counted (``movierec_impressions_dropped_total{reason="database"}``). Neither ever fails a request:
recommendations matter more than their bookkeeping. The same thread deletes impressions older than
``MOVIEREC_IMPRESSIONS_RETENTION_DAYS`` (with their events) once an hour.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import MutableMapping, Sequence
from typing import NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from movierec.db.schema import MAX_SHOWN, Event, Impression, pack_movies

from .metrics import Metrics
from .repository import write_transaction

log = logging.getLogger(__name__)

#: Seconds between retention prunes (the first one runs soon after start-up).
PRUNE_INTERVAL_S = 3600.0
#: Rows deleted per prune statement, so one prune never holds a long lock on a big table.
PRUNE_CHUNK = 5000


def new_request_id(now_ns: int | None = None) -> str:
    """A fresh request id: 32 hex digits, the time in milliseconds (``now_ns``, default the clock) then 80 random bits.

    Time first, so the impressions' primary key grows at its end (a random uuid4 scattered each
    batch over the whole index: 4 x the writer's CPU per impression on SQLite); 80 random bits
    keep ids unguessable, so events cannot be forged for other people's answers.
    """
    return f"{(time.time_ns() if now_ns is None else now_ns) // 1_000_000:012x}{os.urandom(10).hex()}"


_INSERT_INTO = "INSERT INTO impressions (request_id, user_id, model_version, source, endpoint, created_at, movies) "
#: psycopg (``%s``) takes the whole batch as one JSON array that PostgreSQL takes apart: through
#: executemany (a statement per row) or as arrays (psycopg quotes each element) the client side
#: cost 35 to 40 us of the writer's CPU per answer, as JSON 12 (json.dumps is C).
_INSERT_POSTGRES = ("INSERT INTO impressions (request_id, user_id, model_version, source, endpoint, created_at, movies) "
                    "SELECT r->>0, (r->>1)::integer, (r->>2)::integer, r->>3, r->>4, (r->>5)::bigint, "
                    "r->>6 FROM json_array_elements(%s::json) AS r")
#: Most rows in one INSERT on SQLite: 7 x 128 parameters stay under SQLite's oldest limit (999).
SQLITE_ROWS_PER_INSERT = 128
#: sqlite3 (``?``) takes a batch as a few multi-row INSERTs of 1, 2, 4, ... 128 rows (each text
#: prepared once and cached): executemany ran one step per row, and sqlite3 lets go of the GIL for
#: every step, so while a batch was written the event loop and the writer handed the GIL back and
#: forth once per answer; on a busy machine each handover can wait for a time slice, and requests
#: that met a flush waited for all of them (p99 at 1 connection 3 x that of recording off).
_INSERT_SQLITE = {rows: _INSERT_INTO + "VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)
                  for rows in (1 << k for k in range(SQLITE_ROWS_PER_INSERT.bit_length()))}


class Shown(NamedTuple):
    """One answer as recorded: who asked, which version and source answered, the movies in order.

    A named tuple rather than a dataclass: it is built on the request path of every answer, and
    building one costs about a fifth of a frozen dataclass (1 against 5 us on a loaded machine).
    """

    request_id: str
    user_id: int | None
    model_version: int | None
    source: str
    endpoint: str
    created_at: int
    movie_ids: Sequence[int]


class ImpressionRecorder:
    """A bounded in-process queue of impressions and the thread that writes it to the database."""

    def __init__(self, sessions: sessionmaker[Session], metrics: Metrics, *, enabled: bool = True,
                 queue_size: int = 10_000, flush_s: float = 0.2, batch_rows: int = 500,
                 retention_s: float = 90 * 86400.0) -> None:
        self.enabled = enabled
        self._sessions = sessions
        self._metrics = metrics
        self._queue_size = queue_size
        self._flush_s = flush_s
        self._batch_rows = batch_rows
        self._retention_s = retention_s
        self._pending: deque[Shown] = deque()
        self._lock = threading.Lock()  # guards _pending
        self._write_lock = threading.Lock()  # one batch written at a time (thread and explicit flushes)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_prune = 0.0

    # -- the request side ------------------------------------------------------------------------

    def record(self, shown: Shown) -> None:
        """Queue ``shown`` for writing; drops it (counted) when recording is off or the queue is full."""
        if not self.enabled:
            return
        with self._lock:
            if len(self._pending) >= self._queue_size:
                full = True
            else:
                full = False
                self._pending.append(shown)
                size = len(self._pending)
        if full:
            self._metrics.impressions_dropped.labels("queue_full").inc()
            return
        if size == self._batch_rows:  # once per filling, not on every answer while the writer is busy
            self._wake.set()

    @property
    def pending(self) -> int:
        """How many impressions wait to be written."""
        return len(self._pending)

    # -- the writer ------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything waiting now, in batches of at most ``batch_rows``; return how many were written.

        A batch whose write fails is dropped and counted: retrying would hold the queue full
        through an outage and delay every later impression behind it.
        """
        written = 0
        with self._write_lock:
            started = time.thread_time()  # this thread's CPU: what the writing costs beside the requests
            while True:
                with self._lock:
                    count = min(len(self._pending), self._batch_rows)
                    batch = [self._pending.popleft() for _ in range(count)]
                self._metrics.impressions_pending.set(len(self._pending))
                if not batch:
                    self._metrics.impressions_writer_cpu.inc(time.thread_time() - started)
                    return written
                try:
                    self._write(batch)
                except Exception as exc:  # noqa: BLE001 - an outage must not stop the writer
                    self._metrics.impressions_dropped.labels("database").inc(len(batch))
                    log.warning("dropped %d impressions: the database write failed: %s", len(batch), exc)
                    continue
                self._metrics.impressions_recorded.inc(len(batch))
                written += len(batch)

    def _write(self, batch: list[Shown]) -> None:
        # Plain tuples straight to the driver: SQLAlchemy's per-row parameter processing cost 2.5 x
        # the CPU of the insert itself, and this runs beside the requests on the same cores. One row
        # per answer, its movies packed into one column: a row per movie shown cost three times the
        # CPU (docs/online-metrics.md, "Cost").
        rows = [(*s[:6], pack_movies(s.movie_ids[:MAX_SHOWN])) for s in batch]
        with self._sessions() as session, write_transaction(session):
            connection = session.connection()
            if connection.dialect.paramstyle != "qmark":  # one statement: the batch as one JSON array of rows
                connection.exec_driver_sql(_INSERT_POSTGRES, (json.dumps(rows),))
                return
            done = 0
            while done < len(rows):  # the largest power of two that fits, then the rest
                count = min(SQLITE_ROWS_PER_INSERT, 1 << ((len(rows) - done).bit_length() - 1))
                connection.exec_driver_sql(_INSERT_SQLITE[count],
                                           tuple(value for row in rows[done:done + count] for value in row))
                done += count

    def prune(self, now: float | None = None) -> int:
        """Delete impressions older than the retention period, with their events."""
        cutoff = int((time.time() if now is None else now) - self._retention_s)
        deleted = 0
        while True:
            with self._sessions() as session, write_transaction(session):
                ids = list(session.execute(
                    select(Impression.request_id).where(Impression.created_at < cutoff).limit(PRUNE_CHUNK)).scalars())
                if not ids:
                    break
                # Events first: SQLite enforces ON DELETE CASCADE only with foreign keys on.
                session.execute(delete(Event).where(Event.request_id.in_(ids)))
                session.execute(delete(Impression).where(Impression.request_id.in_(ids)))
            deleted += len(ids)
        if deleted:
            self._metrics.impressions_pruned.inc(deleted)
            log.info("pruned %d impressions older than %d", deleted, cutoff)
        return deleted

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._flush_s)
            self._wake.clear()
            self.flush()
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + PRUNE_INTERVAL_S
                try:
                    self.prune()
                except Exception as exc:  # noqa: BLE001 - retried at the next interval
                    log.warning("impression pruning failed: %s", exc)
        self.flush()

    def start(self) -> None:
        """Start the writer thread (nothing to do when recording is off)."""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the writer after a last flush of what is waiting."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def record_answer(recorder: ImpressionRecorder, headers: MutableMapping[str, str], *, user_id: int | None,
                  model_version: int | None, source: str, endpoint: str, movie_ids: list[int],
                  role: str) -> dict[str, object]:
    """Give an answer its request id, queue it for recording, and say who served it.

    Sets ``X-Request-ID``, ``X-Model-Version`` and ``X-Model-Role`` in ``headers`` and returns the
    body fields ``request_id`` and ``served_by`` (``current`` or ``candidate``).
    """
    now_ns = time.time_ns()
    request_id = new_request_id(now_ns)
    if recorder.enabled:  # the list is handed over, not copied: the caller built it for this
        recorder.record(Shown(request_id, user_id, model_version, source, endpoint, now_ns // 1_000_000_000, movie_ids))
    headers["X-Request-ID"] = request_id
    if model_version is not None:
        headers["X-Model-Version"] = str(model_version)
    headers["X-Model-Role"] = role
    return {"request_id": request_id, "served_by": role}
