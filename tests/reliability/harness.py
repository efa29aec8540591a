"""Shared machinery of the reliability tests: real server processes, a killable TCP proxy in front of
PostgreSQL, synthetic models, throwaway databases, and the result log that ``make soak`` tabulates.

Sizes: every count here comes from :func:`knob`, small in CI and larger under ``make soak``
(``MOVIEREC_SOAK=1``); any knob can be set directly with ``MOVIEREC_REL_<NAME>=<int>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from migrations import upgrade
from movierec.db.engine import make_engine
from movierec.db.schema import Movie, Rating
from movierec.store import ModelStore

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MOVIEREC = str(BIN / "movierec")
SOAK = os.environ.get("MOVIEREC_SOAK", "") == "1"
#: Rows recorded by this process, printed in pytest's terminal summary (see conftest.py).
SUMMARY: list[dict[str, Any]] = []
GENRES = ("Action", "Comedy", "Drama", "Sci-Fi", "Romance", "Thriller")


# -- sizes and results ---------------------------------------------------------------------------


def knob(name: str, ci: int, soak: int) -> int:
    """A count: ``MOVIEREC_REL_<NAME>`` if set, else ``soak`` under ``MOVIEREC_SOAK=1``, else ``ci``."""
    override = os.environ.get(f"MOVIEREC_REL_{name.upper()}")
    if override:
        return int(override)
    return soak if SOAK else ci


def record(area: str, tried: str, times: int, held: str, ok: bool = True, **details: Any) -> None:
    """Append one row of the reliability table to ``MOVIEREC_RELIABILITY_RESULTS`` (a JSON-lines file).

    Called by each test after its checks passed. Without the variable (plain ``pytest``) the row
    only goes to the terminal summary.
    """
    row = {"area": area, "tried": tried, "times": times, "held": held, "ok": ok, **details}
    SUMMARY.append(row)
    path = os.environ.get("MOVIEREC_RELIABILITY_RESULTS")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=str) + "\n")


# -- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**overrides: str) -> dict[str, str]:
    """Environment for a movierec subprocess: our own MOVIEREC_* only, the repository importable.

    ``PYTHONPATH`` holds the repository root so the subprocess imports this checkout's packages
    even where an older editable install maps them differently.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    env.setdefault("MOVIEREC_LOG_LEVEL", "WARNING")
    env["MOVIEREC_TRAIN_THREADS"] = "1"
    env.update(overrides)
    return env


def kill_group(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group we started ``proc`` in (uvicorn workers included)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@dataclass
class Server:
    """A ``movierec serve`` subprocess on 127.0.0.1:``port`` (its own process group)."""

    env: dict[str, str]
    workdir: Path
    workers: int = 1
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: str | None = "/health", timeout: float = 60.0) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"server-{self.port}-{int(time.time() * 1000)}.log"
        log = self.log_path.open("wb")
        args = [MOVIEREC, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
                "--workers", str(self.workers)]  # explicit: the default depends on the machine
        self.proc = subprocess.Popen(args, env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        if wait:
            self.wait_for(wait, timeout)
        return self

    def wait_for(self, path: str, timeout: float = 60.0, status: int = 200) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                response = httpx.get(self.url + path, timeout=5)
                if response.status_code == status:
                    return response
                last = response.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"{self.url}{path} did not answer {status} within {timeout}s (last: {last!r}):\n{self.log()}")

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        """SIGKILL the whole process group and reap it."""
        if self.proc is None:
            return
        kill_group(self.proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            return
        kill_group(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def pids(self) -> list[int]:
        """The server's process and its children (uvicorn workers)."""
        import psutil

        if self.proc is None:
            return []
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent.pid] + [c.pid for c in parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> int:
        """Resident memory of the server and its workers, summed."""
        import psutil

        total = 0
        for pid in self.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += psutil.Process(pid).memory_info().rss
        return total


@contextlib.contextmanager
def running_server(env: dict[str, str], workdir: Path, workers: int = 1, wait: str | None = "/health",
                   timeout: float = 60.0) -> Iterator[Server]:
    """A started server, killed afterwards whatever happens."""
    server = Server(env=env, workdir=workdir, workers=workers)
    try:
        server.start(wait=wait, timeout=timeout)
        yield server
    finally:
        server.stop()


# -- a TCP proxy we can take down ----------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; ``down()`` makes the target unreachable.

    * ``down()``: closes the listener and every open connection (connects are refused, open
      sessions see a reset) -- the database host going away.
    * ``blackhole()``: accepts connections but forwards nothing and drops open ones -- a network
      partition where packets vanish (clients hang until their own timeouts).
    * ``up()``: listens again on the same port and forwards normally.
    """

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self.mode = "down"
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.accepted = 0

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        self._close_all()
        self.mode = "up"
        self._listen()

    def blackhole(self) -> None:
        self._close_all()
        self.mode = "blackhole"
        self._listen()

    def down(self) -> None:
        self.mode = "down"
        self._close_all()

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                sock.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        sock.listen(128)
        self._listener = sock
        self._thread = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True)
        self._thread.start()

    def _close_all(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                # RST instead of FIN: the peer sees the connection die, as when a host goes away.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            with contextlib.suppress(OSError):
                conn.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                self._conns.add(client)
            if self.mode != "up":
                continue  # blackhole: hold the connection open, never answer
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                with contextlib.suppress(OSError):
                    client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.add(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        pair = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._conns.discard(a)
                self._conns.discard(b)


# -- databases -----------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_postgres(admin_url: str, prefix: str = "movierec_rel") -> Iterator[str]:
    """A new, migrated PostgreSQL database (dropped afterwards, connections forced off)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def via_proxy(url: str, proxy: TcpProxy) -> str:
    """``url`` with host and port replaced by the proxy's."""
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def seed(url: str, movie_ids: Sequence[int], ratings: Sequence[tuple[int, int, float, int]] = ()) -> None:
    """Movies ``Movie <id>`` (year and genres derived from the id) and the given ratings."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Movie), [
                {"id": i, "title": f"Movie {i}", "year": 1970 + i % 50,
                 "genres": "|".join(sorted({GENRES[i % len(GENRES)], GENRES[(i // 4) % len(GENRES)]}))}
                for i in movie_ids])
            if ratings:
                conn.execute(insert(Rating), [{"user_id": u, "movie_id": m, "rating": r, "rated_at": t}
                                              for u, m, r, t in ratings])
    finally:
        engine.dispose()


def db_exec(url: str, sql: str, **params: Any) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def db_rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


# -- models --------------------------------------------------------------------------------------


def synthetic_model(n_users: int = 50, n_movies: int = 40, k: int = 8, seed: int = 0,
                    max_rated_at: int = 1_000) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors and manifest of a valid ``dot`` model over users 1..n and movies 1..m."""
    rng = np.random.default_rng(seed)
    tensors = {
        "user_ids": np.arange(1, n_users + 1, dtype=np.int64),
        "movie_ids": np.arange(1, n_movies + 1, dtype=np.int64),
        "user_factors": (rng.normal(size=(n_users, k)) * 0.5).astype(np.float32),
        "movie_factors": (rng.normal(size=(n_movies, k)) * 0.5).astype(np.float32),
        "user_bias": (rng.normal(size=n_users) * 0.2).astype(np.float32),
        "movie_bias": (rng.normal(size=n_movies) * 0.2).astype(np.float32),
        "rank_bias": (rng.normal(size=n_movies) * 0.2).astype(np.float32),
    }
    manifest = {
        "kind": "dot", "factors": k, "y_range": [0.0, 5.5], "rating_scale": [0.5, 5.0], "global_bias": 0.3,
        "counts": {"users": n_users, "movies": n_movies, "ratings": 10 * n_users},
        "data_snapshot": {"ratings": 10 * n_users, "max_rated_at": max_rated_at},
        "metrics": {"rmse": 0.9}, "seed": seed,
    }
    return tensors, manifest


def publish_synthetic(store_root: Path, **kwargs: Any) -> int:
    tensors, manifest = synthetic_model(**kwargs)
    return ModelStore(store_root).publish(tensors, manifest)


def write_udata(path: Path, n_users: int = 60, n_movies: int = 40, per_user: int = 15, seed: int = 0) -> Path:
    """A small MovieLens ``u.data`` file (tab-separated, integer stars) over movies 1..n_movies."""
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(1, n_users + 1):
        for movie in rng.choice(np.arange(1, n_movies + 1), size=per_user, replace=False):
            lines.append(f"{user}\t{movie}\t{rng.integers(1, 6)}\t{880_000_000 + int(rng.integers(0, 10**6))}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    return path


def check_store(root: Path) -> dict[str, Any]:
    """Every numbered version loads completely and the current one exists; returns a summary.

    Raises AssertionError naming the first damaged version.
    """
    store = ModelStore(root)
    versions = store.versions()
    for version in versions:
        try:
            store.load(version)
        except Exception as exc:
            raise AssertionError(f"version {version} in {root} is visible but does not load: {exc}") from exc
    current = store.current_version()
    assert (current is None) == (not versions)
    leftovers = sorted(p.name for p in root.glob(".tmp-*")) if root.is_dir() else []
    return {"versions": versions, "current": current, "leftovers": leftovers}
