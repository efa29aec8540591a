"""The model being served, swapped atomically when a new version is published.

Readers take ``registry.state`` once per request and use that object throughout, so a reload in
the middle of a request never mixes two versions: loading, validation and preparation happen on
the side and only then is one reference replaced.

The registry also knows which users have rated since the model's data snapshot ("stale" users),
so ``/predict`` can use the trained factors of everybody else without a database round trip.
The set is computed when a version is loaded, extended by this process's writes at once and by
other processes' writes through a periodic scan of the ``rated_at`` index.

Beside CURRENT, the store may name a candidate version serving a hashed share of users
(:class:`movierec.store.Candidate`). The registry loads it the same way, on the side, and swaps
one reference (:attr:`ModelRegistry.candidate`); a candidate that fails to load keeps the previous
candidate state (or none) and CURRENT keeps serving everybody else. :meth:`ModelRegistry.serving`
picks the state of one user.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from movierec.ann_index import HEADER_FILE as ANN_HEADER_FILE
from movierec.store import MANIFEST_FILE, WEIGHTS_FILE, Candidate, CorruptModelError, ModelStore, StoreError

from . import repository
from .ann import AnnRanker, ranker_for
from .catalogue import ModelCatalogue, shared_directory
from .memory import release_free_memory
from .metrics import Metrics
from .scoring import LoadedModel

log = logging.getLogger(__name__)

#: The stale-user scan re-reads this many seconds before its watermark: a rating committed late
#: with an earlier server timestamp (transactions finish out of order) is still caught.
WATERMARK_OVERLAP_S = 120


@dataclass
class ServingState:
    """A loaded model, the catalogue aligned with its movie rows, and the users whose ratings are
    newer than its data snapshot."""

    model: LoadedModel
    catalogue: ModelCatalogue
    stale_users: set[int] = field(default_factory=set)
    watermark: int | None = None  # newest rated_at seen by the stale-user scan
    ann: AnnRanker | None = None  # the index of a large catalogue (app/ann.py); None: exact scoring

    @property
    def ranker(self) -> LoadedModel | AnnRanker:
        """What answers ``top_for_user`` and ``similar``: the ANN index when there is one, else the model."""
        return self.ann if self.ann is not None else self.model


@dataclass(frozen=True)
class CandidateState:
    """The candidate's pointer and its loaded serving state."""

    pointer: Candidate
    state: ServingState


@dataclass(frozen=True)
class ReloadResult:
    """Outcome of a reload attempt."""

    version: int | None
    previous: int | None
    changed: bool
    error: str | None = None


class ModelRegistry:
    """Holds the current :class:`ServingState` and loads new versions from the store."""

    def __init__(self, store_root: Path, sessions: sessionmaker[Session], metrics: Metrics,
                 ann_min_movies: int | None = None) -> None:
        self.store = ModelStore(store_root)
        #: Catalogues of at least this many movies are ranked through an ANN index (None: never).
        self.ann_min_movies = ann_min_movies
        self._sessions = sessions
        self._metrics = metrics
        self.state: ServingState | None = None
        self.candidate: CandidateState | None = None
        self.last_error: str | None = None
        self.candidate_error: str | None = None
        self._load_lock = threading.Lock()
        # Versions refused, by a signature of their files: a broken version is not retried until
        # its files change, so the poll loop does not re-hash a large corrupt file every tick.
        self._refused: dict[int, tuple[object, ...]] = {}

    # -- reading ---------------------------------------------------------------------------------

    @property
    def model(self) -> LoadedModel | None:
        state = self.state
        return state.model if state is not None else None

    def serving(self, user_id: int | None) -> tuple[ServingState | None, str]:
        """The state that answers ``user_id`` and its role: ``"candidate"`` for the candidate's
        share of users, else ``"current"`` (also for requests without a user)."""
        candidate = self.candidate
        if candidate is not None and user_id is not None and candidate.pointer.serves(user_id):
            return candidate.state, "candidate"
        return self.state, "current"

    def is_stale(self, state: ServingState, user_id: int) -> bool:
        """True if the user rated after the model's snapshot (their trained factors are out of date)."""
        return user_id in state.stale_users

    def mark_stale(self, user_ids: set[int] | list[int]) -> None:
        """Called after this process stored ratings for these users."""
        for state in self._states():
            state.stale_users.update(user_ids)

    def _states(self) -> list[ServingState]:
        states = [self.state] if self.state is not None else []
        candidate = self.candidate
        if candidate is not None and candidate.state is not self.state:
            states.append(candidate.state)
        return states

    # -- loading ---------------------------------------------------------------------------------

    def _signature(self, version: int) -> tuple[object, ...]:
        try:
            path = self.store.version_path(version)
        except StoreError:
            return (version,)
        parts: list[object] = [version]
        for name in (MANIFEST_FILE, WEIGHTS_FILE, ANN_HEADER_FILE):
            try:
                st = (path / name).stat()
                parts.extend((st.st_mtime_ns, st.st_size))
            except OSError:
                parts.append(None)
        return tuple(parts)

    def poll(self) -> ReloadResult | None:
        """Load the store's current version if it differs from the served one (cheap when not)."""
        try:
            version = self.store.current_version()
        except OSError as exc:
            log.warning("cannot read model store %s: %s", self.store.root, exc)
            return None
        current = self.model.version if self.model is not None else None
        result = None
        if version is not None and version != current and self._refused.get(version) != self._signature(version):
            result = self.reload(version)  # first: a promoted candidate's state is reused
        self.poll_candidate()
        return result

    def poll_candidate(self) -> None:
        """Follow the store's candidate pointer: load a new candidate version, take a new share or
        salt, or drop the candidate when the pointer is gone. A version that fails to load leaves
        the previous candidate state serving (reason in :attr:`candidate_error`)."""
        try:
            pointer = self.store.candidate()
        except OSError as exc:
            log.warning("cannot read the candidate pointer in %s: %s", self.store.root, exc)
            return
        loaded = self.candidate
        if pointer is None:
            if loaded is not None:
                log.info("candidate version %s no longer served", loaded.pointer.version)
            self._set_candidate(None)
            self.candidate_error = None
            return
        if loaded is not None and loaded.pointer == pointer:
            return
        if loaded is not None and loaded.pointer.version == pointer.version:
            self._set_candidate(CandidateState(pointer, loaded.state))  # new share or salt only
            return
        if self._refused.get(pointer.version) == self._signature(pointer.version):
            return
        try:
            state = self._load_state(pointer.version)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the previous candidate state
            if isinstance(exc, (StoreError, ValueError, KeyError, TypeError)):
                self._refused[pointer.version] = self._signature(pointer.version)
            self.candidate_error = f"candidate version {pointer.version} not loaded: {exc}"
            self._metrics.reloads.labels("failure").inc()
            log.error("%s; keeping candidate %s", self.candidate_error,
                      loaded.pointer.version if loaded is not None else None)
            return
        self._set_candidate(CandidateState(pointer, state))
        self.candidate_error = None
        self._metrics.reloads.labels("success").inc()
        log.info("candidate version %s serves %.1f %% of users", pointer.version, 100 * pointer.share)

    def _set_candidate(self, candidate: CandidateState | None) -> None:
        self.candidate = candidate  # one reference: a request sees the old candidate or the new one
        self._metrics.candidate_version.set(candidate.pointer.version if candidate is not None else 0)
        self._metrics.candidate_share.set(candidate.pointer.share if candidate is not None else 0)

    def _load_state(self, version: int) -> ServingState:
        """Load, validate and prepare ``version`` on the side (the served state is untouched).

        The candidate's state is reused when it is that version (a promotion needs no second load).
        """
        candidate = self.candidate
        if candidate is not None and candidate.state.model.version == version:
            self._scan_stale(candidate.state)
            return candidate.state
        artifact = self.store.load(version)
        model = LoadedModel(artifact)
        ann = ranker_for(artifact, model, self.ann_min_movies)  # CorruptModelError for a bad index
        with self._sessions() as session:
            catalogue = ModelCatalogue.from_chunks(repository.movie_chunks(session), model.movie_ids)
        directory = shared_directory()
        if directory is not None:  # one copy of the catalogue for all the server's workers
            try:
                catalogue = catalogue.shared(directory)
            except OSError as exc:  # e.g. a full disk: each worker keeps its own copy
                log.warning("catalogue of version %s not shared between workers: %s", version, exc)
        state = ServingState(model, catalogue, ann=ann)
        self._scan_stale(state)
        return state

    def reload(self, version: int | None = None, force: bool = False) -> ReloadResult:
        """Load ``version`` (default: the store's current one), validate it and swap it in.

        On any failure the old model keeps serving and the error is recorded and returned. With no
        model served yet (a start while CURRENT names a damaged version), the newest version that
        loads is served instead, so one bad version cannot keep the service down.
        """
        result = self._reload_one(version, force)
        if result.error is None or self.model is not None or version is not None:
            return result
        failed = result.error
        for older in reversed(self.store.versions()):
            if older in self._refused:
                continue
            fallback = self._reload_one(older, force)
            if fallback.changed:
                log.warning("serving version %s instead: %s", older, failed)
                return fallback
        return result

    def _reload_one(self, version: int | None, force: bool) -> ReloadResult:
        with self._load_lock:
            previous = self.model.version if self.model is not None else None
            try:
                if version is None:
                    version = self.store.current_version()
                if version is None:
                    raise StoreError(f"no model in {self.store.root}")
                if version == previous and not force:
                    return ReloadResult(version, previous, changed=False)
                signature = self._signature(version)
                started = time.perf_counter()
                state = self._load_state(version)
                model = state.model
            except (StoreError, ValueError, KeyError, TypeError) as exc:
                # A damaged version: refuse it until its files change.
                if version is not None:
                    self._refused[version] = self._signature(version)
                return self._failed(version, previous, f"model version {version} refused: {exc}",
                                    corrupt=isinstance(exc, CorruptModelError))
            except Exception as exc:  # noqa: BLE001 - e.g. database down: transient, retried next tick
                # The reason is shown on /ready: name the failing part, keep driver messages and SQL
                # in the log only.
                log.error("loading model version %s failed: %s", version, exc)
                what = "the database failed" if isinstance(exc, sa_exc.SQLAlchemyError) else type(exc).__name__
                return self._failed(version, previous, f"model version {version} not loaded: {what} (see the log)",
                                    corrupt=False)
            self.state = state  # the one atomic swap
            release_free_memory()  # the catalogue build's temporaries (and the old version, once unused)
            self._refused.pop(version, None)
            self.last_error = None
            self._metrics.reloads.labels("success").inc()
            self._metrics.model_version.set(version)
            log.info("serving model version %s (%s, k=%s, %d users, %d movies) loaded in %.0f ms; was %s",
                     version, model.kind, model.k, len(model.user_ids), len(model.movie_ids),
                     1000 * (time.perf_counter() - started), previous)
            return ReloadResult(version, previous, changed=True)

    def _failed(self, version: int | None, previous: int | None, message: str, corrupt: bool) -> ReloadResult:
        self.last_error = message
        self._metrics.reloads.labels("failure").inc()
        log.error("%s; still serving version %s", message, previous)
        return ReloadResult(previous, previous, changed=False, error=message)

    # -- stale users -----------------------------------------------------------------------------

    def _scan_stale(self, state: ServingState) -> None:
        snapshot = state.model.snapshot_max_rated_at
        if snapshot is None:
            # Unknown snapshot: trust the trained factors of known users (cannot tell who is newer).
            return
        # Neither a stored rating nor the snapshot may move the watermark past the clock: the API
        # and the importer refuse future dates now, but one stored before (a rating "of 2100")
        # would otherwise put every later rating below the watermark, and the workers would stop
        # seeing each other's writes. Such a row is found again by every scan (its user stays
        # stale, which is right: their trained factors do not know that rating).
        # Clamped to the clock itself, not to the clock plus the skew a rating may have: the scan
        # re-reads only WATERMARK_OVERLAP_S below the watermark.
        now = int(time.time())
        snapshot = min(snapshot, _trained_at(state.model.manifest, now))
        after = snapshot if state.watermark is None else max(snapshot, state.watermark - WATERMARK_OVERLAP_S)
        with self._sessions() as session:
            rows = repository.users_rated_after(session, after)
        for user, latest in rows:
            state.stale_users.add(user)
            latest = min(latest, now)
            if state.watermark is None or latest > state.watermark:
                state.watermark = latest
        if state.watermark is None:
            state.watermark = snapshot

    def refresh_stale(self) -> None:
        """Pick up users who rated through other processes since the last scan."""
        for state in self._states():
            self._scan_stale(state)


def _trained_at(manifest: dict[str, object], default: int) -> int:
    """When the version was published (its ``created_at``, at most ``default``), as Unix seconds.

    A snapshot later than that is a future-dated rating that was in the training data (models
    trained before such dates were refused): the scan starts from the publication time instead.
    """
    created = manifest.get("created_at")
    if isinstance(created, str):
        with contextlib.suppress(ValueError):
            return min(default, int(calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))))
    return default
