"""A real uvicorn process (as `movierec serve` starts it), driven over HTTP with httpx.

Checks what only a real server shows: concurrent writers (every acknowledged rating is in the
database) and a model published while requests run (zero failed requests).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from movierec.db.schema import Rating

from .conftest import MODEL_MOVIES, MODEL_USERS
from .helpers import publish_dot

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(db_url: str, seeded: Engine, store: Path, tmp_path: Path) -> Iterator[str]:
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=1)
    port = _free_port()
    env = {**os.environ, "MOVIEREC_DATABASE_URL": db_url, "MOVIEREC_MODEL_STORE": str(store),
           "MOVIEREC_RELOAD_INTERVAL": "0.1", "MOVIEREC_API_KEY": "k3y", "MOVIEREC_LOG_LEVEL": "WARNING"}
    code = f"from app.cli import serve; serve(host='127.0.0.1', port={port}, workers=1, access_log=False)"
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {(tmp_path / 'server.log').read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_concurrent_writers_lose_nothing(server: str, seeded: Engine) -> None:
    acknowledged: list[tuple[int, int, float]] = []
    failures: list[str] = []

    def writer(user_id: int) -> None:
        with httpx.Client(base_url=server, headers={"X-API-Key": "k3y"}, timeout=30) as http:
            for movie in range(1, 26):
                rating = float(1 + (user_id + movie) % 9 / 2)
                body: object = {"user_id": user_id, "movie_id": movie, "rating": rating}
                if movie % 5 == 0:  # some list posts, and re-ratings of the same movie
                    body = [body, {"user_id": user_id, "movie_id": movie - 1, "rating": 5.0}]
                response = http.post("/ratings", json=body)
                if response.status_code != 201:
                    failures.append(f"{response.status_code} {response.text}")
                    continue
                stored = response.json() if isinstance(response.json(), list) else [response.json()]
                acknowledged.extend((r["user_id"], r["movie_id"], r["rating"]) for r in stored)

    threads = [threading.Thread(target=writer, args=(1000 + i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    latest: dict[tuple[int, int], float] = {}
    for user, movie, rating in acknowledged:  # each thread writes its own user sequentially
        latest[(user, movie)] = rating
    with seeded.connect() as conn:
        rows = conn.execute(select(Rating.user_id, Rating.movie_id, Rating.rating).where(Rating.user_id >= 1000)).all()
    assert {(u, m): r for u, m, r in rows} == latest
    # and the writers are personalised at once, without a retrain
    body = httpx.get(f"{server}/recommend", params={"user_id": 1003}).json()
    assert body["source"] == "fold_in"


def test_publish_while_requests_run_gives_zero_errors(server: str, store: Path) -> None:
    stop = threading.Event()
    errors: list[str] = []
    versions: set[int] = set()
    count = [0]

    def reader(worker: int) -> None:
        with httpx.Client(base_url=server, timeout=30) as http:
            i = 0
            while not stop.is_set():
                i += 1
                user = 1 + (worker + i) % 20
                for url, params in (("/predict", {"user_id": user, "movie_id": 1 + i % 25}),
                                    ("/recommend", {"user_id": user, "n": 5}),
                                    ("/movies/3/similar", {"n": 3})):
                    response = http.get(url, params=params)
                    count[0] += 1
                    if response.status_code != 200:
                        errors.append(f"{url} {response.status_code} {response.text}")
                    else:
                        versions.add(response.json()["model_version"])

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for seed in range(2, 6):
            time.sleep(0.4)
            publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=seed)
        deadline = time.monotonic() + 10
        while 5 not in versions and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert count[0] > 50
    assert 5 in versions and len(versions) >= 3  # requests ran on several versions as they were swapped
    assert 'movierec_model_reloads_total{result="success"} 5.0' in httpx.get(f"{server}/metrics").text


def test_default_worker_count_follows_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker per usable core, at most 8, at most 2 with PostgreSQL; MOVIEREC_WORKERS and --workers win."""
    from app.cli import default_workers, usable_cpus

    assert default_workers("sqlite:///x.db", cpus=1) == 1
    assert default_workers("sqlite:///x.db", cpus=6) == 6
    assert default_workers("sqlite:///x.db", cpus=64) == 8
    assert default_workers("postgresql+psycopg://u@h/db", cpus=6) == 2
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
    chosen: dict[str, object] = {}
    monkeypatch.setattr("uvicorn.run", lambda *a, **kw: chosen.update(kw))
    monkeypatch.setattr("app.cli.fork_workers_from_here", lambda: True)  # not in the test process
    monkeypatch.setattr("app.cli.freeze_imports", lambda: None)
    from app.cli import serve
    from movierec.settings import get_settings

    get_settings.cache_clear()
    monkeypatch.setenv("MOVIEREC_WORKERS", "3")
    try:
        serve(host="127.0.0.1", port=1, workers=None, access_log=False)
        assert chosen["workers"] == 3
        serve(host="127.0.0.1", port=1, workers=5, access_log=False)
        assert chosen["workers"] == 5
        monkeypatch.setenv("MOVIEREC_WORKERS", "0")
        get_settings.cache_clear()
        serve(host="127.0.0.1", port=1, workers=None, access_log=False)
        assert chosen["workers"] == default_workers(get_settings().database_url)
    finally:
        get_settings.cache_clear()


def test_one_worker_freezes_the_imported_heap_and_several_fork_from_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full collection must not walk the imports inside a request (the p99 of /recommend): one
    worker freezes them before uvicorn starts, several are forked from a supervisor that froze them."""
    import gc

    from app.cli import freeze_imports, serve
    from movierec.settings import get_settings

    before = gc.get_freeze_count()
    try:
        freeze_imports()
        assert "app.main" in sys.modules
        assert gc.get_freeze_count() > max(before, 10_000)  # the imports: hundreds of thousands of objects
    finally:
        gc.unfreeze()  # the test process keeps collecting its own garbage
    calls: list[str] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **kw: calls.append(f"run {kw['workers']}"))
    monkeypatch.setattr("app.cli.fork_workers_from_here", lambda: calls.append("fork") or True)
    monkeypatch.setattr("app.cli.freeze_imports", lambda: calls.append("freeze"))
    get_settings.cache_clear()
    try:
        serve(host="127.0.0.1", port=1, workers=1, access_log=False)
        serve(host="127.0.0.1", port=1, workers=3, access_log=False)
    finally:
        get_settings.cache_clear()
    assert calls == ["freeze", "run 1", "fork", "run 3"]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _rollup_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux /proc needed")
def test_several_workers_are_forked_after_the_imports_and_still_reload(db_url: str, seeded: Engine, store: Path,
                                                                      tmp_path: Path) -> None:
    """`serve --workers 2`: the workers are forked from the supervisor once it has imported the app
    (they share its heap's pages instead of importing everything again), serve, follow a newly
    published version, and stop with the supervisor."""
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=1)
    env = {**os.environ, "MOVIEREC_DATABASE_URL": db_url, "MOVIEREC_MODEL_STORE": str(store),
           "MOVIEREC_RELOAD_INTERVAL": "0.1", "MOVIEREC_API_KEY": "k3y", "MOVIEREC_LOG_LEVEL": "WARNING"}
    log_path = tmp_path / "server.log"
    for _attempt in range(3):
        # A free port can be handed to another process (a parallel test) between our probe and the
        # server's bind: then uvicorn exits with "Address already in use" and another port is tried.
        port = _free_port()
        code = f"from app.cli import serve; serve(host='127.0.0.1', port={port}, workers=2, access_log=False)"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while proc.poll() is None and (len(_children(proc.pid)) < 2 or not _ready(base)):
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        if proc.poll() is None or b"Address already in use" not in log_path.read_bytes():
            break
    workers: list[int] = []
    try:
        assert proc.poll() is None, log_path.read_text()
        workers = [pid for pid in _children(proc.pid)
                   if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2, workers
        for pid in workers:
            assert b"spawn_main" not in Path(f"/proc/{pid}/cmdline").read_bytes()  # forked, not spawned
            # the imports' pages: written by the supervisor, shared with it (a spawned worker has ~0)
            assert _rollup_kib(pid, "Shared_Dirty:") > 10 * 1024, log_path.read_text()
        publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=2)
        seen: list[int] = []
        while len(seen) < 20 or set(seen[-20:]) != {2}:  # new connections: the kernel picks the worker
            assert time.monotonic() < deadline + 30, seen[-20:]
            response = httpx.get(f"{base}/recommend", params={"user_id": 1 + len(seen) % 20, "n": 5})
            assert response.status_code == 200, response.text
            seen.append(response.json()["model_version"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0 or proc.returncode == -15, log_path.read_text()
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
