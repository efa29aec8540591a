"""Bounded load: mixed reads and writes from several client threads against ``movierec serve --workers 2``
on PostgreSQL, loopback only, a fixed number of requests under a time cap.

Passes when every request got its expected status (zero errors), the server's resident memory
(all workers) did not grow beyond a small bound between the end of the warm-up and the end of
the run, and every acknowledged write is in the database. Latency percentiles (p50/p95/p99, per
endpoint and overall) are reported in the summary and, under ``make soak``, in the table.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
import pytest

from .conftest import API_KEY, N_MOVIES, N_USERS, Stack
from .harness import db_rows, knob, record, running_server

pytest.importorskip("psutil", reason="psutil is not installed (it belongs in the test extra)")
KEY = {"X-API-Key": API_KEY}
WRITE_BASE = 50_000


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    acked: dict[tuple[int, int], float] = field(default_factory=dict)
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def pick(rng: random.Random, thread: int, n: int) -> tuple[str, str, str, object, tuple[int, ...]]:
    """(label, method, path, json body, expected statuses) of one request of the mix."""
    u, m = rng.randint(1, N_USERS), rng.randint(1, N_MOVIES)
    roll = rng.random()
    if roll < 0.35:
        return "GET /predict", "GET", f"/predict?user_id={u}&movie_id={m}", None, (200,)
    if roll < 0.45:
        body = [{"user_id": rng.randint(1, N_USERS + 20), "movie_id": rng.randint(1, N_MOVIES)} for _ in range(20)]
        return "POST /predict", "POST", "/predict", body, (200,)
    if roll < 0.60:
        return "GET /recommend", "GET", f"/recommend?user_id={rng.randint(1, N_USERS + 20)}&n=10", None, (200,)
    if roll < 0.68:
        return "GET /movies", "GET", f"/movies?query=movie {rng.randint(1, 9)}&limit=20", None, (200,)
    if roll < 0.74:
        return "GET /similar", "GET", f"/movies/{m}/similar?n=10", None, (200,)
    if roll < 0.78:
        return "GET /popular", "GET", "/popular?n=10", None, (200,)
    if roll < 0.80:
        return "GET /users/ratings", "GET", f"/users/{u}/ratings", None, (200,)
    user = WRITE_BASE + thread * 10_000 + n // N_MOVIES
    return "POST /ratings", "POST", "/ratings", {"user_id": user, "movie_id": 1 + n % N_MOVIES,
                                                 "rating": rng.randint(1, 10) / 2}, (201,)


def worker(url: str, thread: int, count: int, deadline: float, results: Results, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30, headers=KEY) as client:
        for n in range(count):
            if time.monotonic() > deadline:
                return
            label, method, path, body, expected = pick(rng, thread, n)
            started = time.perf_counter()
            try:
                r = client.request(method, path, json=body)
                status, text = r.status_code, r.text[:200]
            except httpx.HTTPError as exc:
                status, text = -1, repr(exc)
            elapsed = time.perf_counter() - started
            with results.lock:
                results.done += 1
                results.latencies[label].append(elapsed)
                if status not in expected:
                    results.errors.append(f"{label} {path} -> {status} {text}")
                elif label == "POST /ratings":
                    results.acked[(body["user_id"], body["movie_id"])] = body["rating"]  # type: ignore[index]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def test_bounded_mixed_load(stack: Stack) -> None:
    threads = knob("load_threads", 6, 16)
    total = knob("load_requests", 2400, 60_000)
    # A cap against a hung run, not a speed requirement: 2400 requests take ~30 s on an idle
    # 2-core machine, and several times that on a busy one.
    cap = knob("load_seconds", 300, 1200)
    warmup = knob("load_warmup", 400, 2000)
    with running_server(stack.env, stack.workdir, workers=2) as server:
        server.wait_for("/ready")
        # Warm-up: every worker has loaded its model, filled its pools and caches.
        warm = Results()
        ws = [threading.Thread(target=worker, args=(server.url, 90 + t, warmup // threads, time.monotonic() + 60,
                                                    warm, t)) for t in range(threads)]
        for w in ws:
            w.start()
        for w in ws:
            w.join()
        assert not warm.errors, warm.errors[:5]
        time.sleep(0.5)
        samples = [(0.0, server.rss_bytes())]
        results = Results()
        started = time.monotonic()
        deadline = started + cap
        ws = [threading.Thread(target=worker, args=(server.url, t, total // threads, deadline, results, 1000 + t))
              for t in range(threads)]
        for w in ws:
            w.start()
        while any(w.is_alive() for w in ws):
            time.sleep(0.25)
            samples.append((time.monotonic() - started, server.rss_bytes()))
        for w in ws:
            w.join()
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        samples.append((time.monotonic() - started, server.rss_bytes()))
        alive = server.proc is not None and server.proc.poll() is None

    assert alive, "the server died under load"
    assert not results.errors, f"{len(results.errors)} errors, e.g. {results.errors[:5]}"
    assert results.done >= total // threads * threads or elapsed >= cap, "the load did not run"
    assert results.done == total // threads * threads, f"only {results.done} of {total} requests within {cap}s"
    stored = {(u, m): r for u, m, r in db_rows(stack.db_url, "SELECT user_id, movie_id, rating FROM ratings "
                                                             "WHERE user_id >= :b", b=WRITE_BASE)}
    assert all(stored.get(k) == v for k, v in results.acked.items()), "an acknowledged write is missing"

    # Memory: the start of the run against its last quarter; allow a small absolute bound.
    first = samples[0][1]
    tail = [rss for t, rss in samples if t >= 0.75 * elapsed] or [samples[-1][1]]
    growth = statistics.median(tail) - first
    bound = max(24 * 2**20, 0.08 * first)
    all_lat = [x for values in results.latencies.values() for x in values]
    per = "; ".join(f"{label} n={len(v)} p50={pct(v, .5):.1f} p99={pct(v, .99):.1f}"
                    for label, v in sorted(results.latencies.items()))
    summary = (f"{results.done} requests in {elapsed:.1f}s ({results.done / elapsed:.0f}/s), {threads} clients, 2 workers; "
               f"p50 {pct(all_lat, .5):.1f} ms, p95 {pct(all_lat, .95):.1f} ms, p99 {pct(all_lat, .99):.1f} ms; "
               f"RSS {first / 2**20:.0f} -> {statistics.median(tail) / 2**20:.0f} MiB")
    assert growth <= bound, f"memory grew {growth / 2**20:.1f} MiB (bound {bound / 2**20:.1f}): {summary}"
    record("load", f"mixed reads/writes ({threads} loopback clients, fixed count, {cap}s cap)", results.done,
           f"0 errors; {summary}; growth {growth / 2**20:+.1f} MiB (bound {bound / 2**20:.0f})", per_endpoint_ms=per)
