"""Hostile traffic on loopback (issue 13): what one oversized request costs the server, and how /health
fares while 8 clients send such requests in a loop, or while 300 slowloris connections trickle
header lines. Each phase runs on a fresh server of the current checkout and, interleaved, of a
baseline checkout (``--baseline``, e.g. /work/main), both on the same small SQLite database and
synthetic model, with this interpreter (same dependencies, different code).

    python -m bench.hostile --baseline /work/main            # about 6 minutes (the baseline is slow)
    python -m bench.hostile --seconds 5                      # this checkout only, quick

Bounded: fixed phase durations, client timeouts, 127.0.0.1 only, servers killed after each phase.
Server time per request is the server's own histogram (``movierec_http_request_duration_seconds``
of POST /predict and /ratings, measured in the app) for sequential requests from one client.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "hostile.json"
KEY = "bench-key"
BODIES = {"1 MB": b"[" + b"1," * 524_000 + b"1]", "80 KB": b"[" + b"1," * 40_000 + b"1]"}
HEADERS = {"X-API-Key": KEY, "Content-Type": "application/json"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_data(directory: Path) -> tuple[str, Path]:
    """A migrated SQLite database (100 movies, 50 users x 10 ratings) and a published synthetic model."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import insert

    from movierec.db.engine import make_engine
    from migrations import upgrade
    from movierec.db.schema import Movie, Rating
    from movierec.store import ModelStore

    url = f"sqlite:///{directory / 'bench.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(Movie), [{"id": i, "title": f"Movie {i}", "year": 1990, "genres": "Drama"}
                                     for i in range(1, 101)])
        conn.execute(insert(Rating), [{"user_id": u, "movie_id": (u * 7 + j) % 100 + 1, "rating": 1.0 + (u + j) % 5,
                                       "rated_at": 1000 + j} for u in range(1, 51) for j in range(10)])
    engine.dispose()
    rng = np.random.default_rng(0)
    tensors = {"user_ids": np.arange(1, 51, dtype=np.int64), "movie_ids": np.arange(1, 101, dtype=np.int64),
               "user_factors": rng.normal(size=(50, 8)).astype(np.float32),
               "movie_factors": rng.normal(size=(100, 8)).astype(np.float32),
               "user_bias": np.zeros(50, np.float32), "movie_bias": np.zeros(100, np.float32)}
    manifest = {"kind": "dot", "factors": 8, "y_range": [0.0, 5.5], "rating_scale": [0.5, 5.0], "global_bias": 0.3,
                "counts": {"users": 50, "movies": 100}, "data_snapshot": {"rows": 500, "max_rated_at": 2000}}
    store = directory / "models"
    ModelStore(store).publish(tensors, manifest)
    return url, store


@contextmanager
def server(code: Path, url: str, store: Path, workdir: Path, workers: int = 1, **env: str) -> Iterator[str]:
    """``movierec serve --workers N`` of the checkout at ``code`` (its packages first on the path)."""
    port = _free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")}
    environment.update(PYTHONPATH=str(code), MOVIEREC_DATABASE_URL=url, MOVIEREC_MODEL_STORE=str(store),
                       MOVIEREC_API_KEY=KEY, MOVIEREC_LOG_LEVEL="WARNING", MOVIEREC_RELOAD_INTERVAL="0", **env)
    launch = f"from app.cli import serve; serve(host='127.0.0.1', port={port}, workers={workers}, access_log=False)"
    proc = subprocess.Popen([sys.executable, "-c", launch], cwd=workdir, env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server of {code} did not start")
            time.sleep(0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values) * 1000
    return {"n": len(values), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def _server_seconds(base: str) -> tuple[float, int]:
    """Sum and count of the server's own request durations for POST /predict and /ratings
    (0, 0 when the server cannot answer /metrics within a minute: it is still stalled)."""
    try:
        text = httpx.get(base + "/metrics", timeout=60).text
    except httpx.HTTPError:
        return 0.0, 0
    total = count = 0.0
    for route in ("/predict", "/ratings"):
        for kind in ("sum", "count"):
            pattern = rf'movierec_http_request_duration_seconds_{kind}{{method="POST",route="{route}"}} (\S+)'
            match = re.search(pattern, text)
            if match:
                if kind == "sum":
                    total += float(match.group(1))
                else:
                    count += float(match.group(1))
    return total, int(count)


def phase_single(base: str, repeats: int, timeout: float) -> dict[str, object]:
    """One client, sequential requests: the cost of each hostile request on its own."""
    out: dict[str, object] = {}
    stalled = False
    with httpx.Client(timeout=timeout) as client:
        for name, body in BODIES.items():
            for path in ("/predict", "/ratings"):
                if stalled:  # the server is still busy with a request that timed out: nothing to measure
                    out[f"{name} {path}"] = {"not measured": "the server was still stalled by the previous request"}
                    continue
                before = _server_seconds(base)
                latencies, sizes, statuses = [], [], set()
                for _ in range(repeats):
                    started = time.perf_counter()
                    try:
                        r = client.post(base + path, content=body, headers=HEADERS)
                    except httpx.TimeoutException:
                        latencies.append(timeout)
                        statuses.add("timeout")
                        stalled = True
                        break
                    latencies.append(time.perf_counter() - started)
                    sizes.append(len(r.content))
                    statuses.add(r.status_code)
                after = _server_seconds(base)
                served = after[1] - before[1]
                out[f"{name} {path}"] = {
                    "client": _percentiles(latencies),
                    "server_mean_ms": 1000 * (after[0] - before[0]) / served if served else None,
                    "response_bytes": max(sizes) if sizes else None, "statuses": sorted(map(str, statuses)),
                }
    return out


def _probe_health(base: str, stop: threading.Event, timeout: float) -> list[float]:
    latencies: list[float] = []
    with httpx.Client(timeout=timeout) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                client.get(base + "/health")
                latencies.append(time.perf_counter() - started)
            except httpx.HTTPError:
                latencies.append(timeout)
            time.sleep(0.02)
    return latencies


def _run_with_probe(base: str, seconds: float, attack: Callable[[threading.Event], None], timeout: float
                    ) -> list[float]:
    stop = threading.Event()
    attacker = threading.Thread(target=attack, args=(stop,), daemon=True)
    attacker.start()
    time.sleep(0.5)
    result: list[float] = []
    probe = threading.Thread(target=lambda: result.extend(_probe_health(base, stop, timeout)), daemon=True)
    probe.start()
    time.sleep(seconds)
    stop.set()
    probe.join(timeout + 5)
    attacker.join(timeout + 5)
    return result


def _flood_client(base: str, i: int, stop: Any, answered: Any, timeout: float, niceness: int = 0) -> None:
    """One attacking client (its own process: client threads in the prober's process would make
    the probe wait for the GIL and inflate the /health figures), at ``niceness`` (see ``--attacker-nice``)."""
    if niceness:
        os.nice(niceness)
    body = BODIES["1 MB"] if i % 2 else BODIES["80 KB"]
    path = "/predict" if i % 4 < 2 else "/ratings"
    with httpx.Client(timeout=timeout) as client:
        while not stop.is_set():
            try:
                client.post(base + path, content=body, headers=HEADERS)
                with answered.get_lock():
                    answered.value += 1
            except httpx.HTTPError:
                pass


def phase_quiet(base: str, seconds: float, timeout: float) -> dict[str, object]:
    """/health alone: the machine's own latency floor, for comparison."""
    return {"health": _percentiles(_run_with_probe(base, seconds, lambda stop: stop.wait(), timeout))}


def phase_flood(base: str, seconds: float, clients: int, timeout: float, niceness: int = 0) -> dict[str, object]:
    """``clients`` processes post the 1 MB and 80 KB bodies in a loop; /health probed every 20 ms."""
    context = multiprocessing.get_context("fork")
    answered = context.Value("l", 0)

    def attack(stop: threading.Event) -> None:
        halt = context.Event()
        procs = [context.Process(target=_flood_client, args=(base, i, halt, answered, timeout, niceness),
                                 daemon=True)
                 for i in range(clients)]
        for proc in procs:
            proc.start()
        stop.wait()
        halt.set()
        for proc in procs:
            proc.join(timeout + 5)
            if proc.is_alive():
                proc.kill()

    health = _run_with_probe(base, seconds, attack, timeout)
    return {"health": _percentiles(health), "hostile_answered": answered.value,
            "hostile_per_second": answered.value / seconds, "attacker_nice": niceness}


def phase_slowloris(base: str, seconds: float, connections: int, timeout: float) -> dict[str, object]:
    """``connections`` connections send a request line, then one header line a second, never ending."""
    port = int(base.rsplit(":", 1)[1])
    state = {"closed_by_server": 0, "opened": 0}

    def attack(stop: threading.Event) -> None:
        socks = []
        for _ in range(connections):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n")
                socks.append(sock)
            except OSError:
                pass
        state["opened"] = len(socks)
        while not stop.is_set():
            for sock in socks:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass
            stop.wait(1.0)
        for sock in socks:
            sock.settimeout(0.01)
            try:
                sock.recv(1024)  # a 408, or b"": either way the server has closed it
                state["closed_by_server"] += 1
            except (TimeoutError, BlockingIOError):
                pass  # still open
            except OSError:
                state["closed_by_server"] += 1
            sock.close()

    health = _run_with_probe(base, seconds, attack, timeout)
    return {"health": _percentiles(health), **state}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="checkout to compare with (e.g. /work/main)")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each flood/slowloris phase")
    parser.add_argument("--repeats", type=int, default=20, help="sequential requests per body and endpoint")
    parser.add_argument("--timeout", type=float, default=60.0, help="client timeout (a stalled server counts as it)")
    parser.add_argument("--attacker-nice", type=int, default=0,
                        help="also run the flood with the attacking processes at this niceness (e.g. 10): on one "
                             "machine they take CPU the server and the prober would have; niced, they stand for "
                             "clients on other machines, while the server still reads every byte they send")
    parser.add_argument("--default-workers", action="store_true",
                        help="also run the flood against the worker count `movierec serve` picks by default "
                             "(what `make run` serves; the other phases use 1 worker)")
    parser.add_argument("--slow-header-timeout", type=float, default=10.0,
                        help="MOVIEREC_HEADER_TIMEOUT of the servers in the slowloris phase")
    args = parser.parse_args()
    versions = {"this checkout": ROOT}
    if args.baseline:
        versions = {"baseline": args.baseline.resolve(), **versions}
    results: dict[str, dict[str, object]] = {name: {} for name in versions}
    with tempfile.TemporaryDirectory() as tmp:
        url, store = make_data(Path(tmp))
        # (phase, what it runs, server environment, server workers)
        phases = [
            ("quiet", lambda base, name: phase_quiet(base, args.seconds, args.timeout), {}, 1),
            ("single", lambda base, name: phase_single(base, 1 if name == "baseline" else args.repeats,
                                                       args.timeout), {}, 1),
            ("flood", lambda base, name: phase_flood(base, args.seconds, 8, args.timeout), {}, 1),
        ]
        if args.attacker_nice:
            phases.append((FLOOD_NICED, lambda base, name: phase_flood(base, args.seconds, 8, args.timeout,
                                                                       args.attacker_nice), {}, 1))
        if args.default_workers:  # what `movierec serve` picks without --workers
            from app.cli import default_workers

            phases.append((FLOOD_DEFAULT_WORKERS, lambda base, name: phase_flood(base, args.seconds, 8, args.timeout),
                           {}, default_workers(url)))
        phases.append(("slowloris", lambda base, name: phase_slowloris(base, args.seconds, 300, args.timeout),
                       {"MOVIEREC_HEADER_TIMEOUT": str(args.slow_header_timeout)}, 1))
        for phase, run, env, workers in phases:  # interleaved: each phase on the baseline, then on this checkout
            for name, code in versions.items():
                print(f"{phase}: {name} ...", file=sys.stderr, flush=True)
                with server(code, url, store, Path(tmp), workers=workers, **env) as base:
                    results[name][phase] = run(base, name)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                  indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(markdown(results))


#: The optional flood phases (``--attacker-nice``, ``--default-workers``).
FLOOD_NICED = "flood, attackers niced"
FLOOD_DEFAULT_WORKERS = "flood, default workers"


def _ms(value: object) -> str:
    return "-" if value is None else f"{value:,.1f} ms" if value < 10_000 else f"{value / 1000:,.0f} s"


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """The figures as the Markdown table of docs/reliability.md."""
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for name in names:
            try:
                cells.append(cell(results[name]))
            except (KeyError, TypeError):
                cells.append("not measured (server stalled)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("/health p50 / p99, no attack (the machine's floor)",
        lambda r: f"{_ms(r['quiet']['health']['p50_ms'])} / {_ms(r['quiet']['health']['p99_ms'])}")
    for key in ("1 MB /predict", "1 MB /ratings", "80 KB /predict", "80 KB /ratings"):
        def single(r: dict[str, Any], key: str = key) -> str:
            m = r["single"][key]
            if "timeout" in m["statuses"]:
                return f"> {_ms(m['client']['max_ms'])} (client timeout)"
            return (f"{_ms(m['server_mean_ms'])} server, {_ms(m['client']['p50_ms'])} client p50; "
                    f"{m['statuses'][0]}, {m['response_bytes']:,} B")
        row(f"one {key} `[1,1,...]` request", single)
    def flood_rows(phase: str, how: str) -> None:
        if not any(phase in r for r in results.values()):
            return
        row(f"/health p50 / p99 / max, {how}",
            lambda r: f"{_ms(r[phase]['health']['p50_ms'])} / {_ms(r[phase]['health']['p99_ms'])} / "
                      f"{_ms(r[phase]['health']['max_ms'])} ({r[phase]['health']['n']} probes)")
        row("hostile requests answered per second" + ("" if phase == "flood" else f", {phase.split(', ', 1)[1]}"),
            lambda r: f"{r[phase]['hostile_per_second']:,.1f}")

    flood_rows("flood", "8 clients posting 1 MB and 80 KB bodies")
    niceness = next((r[FLOOD_NICED]["attacker_nice"] for r in results.values() if FLOOD_NICED in r), None)
    flood_rows(FLOOD_NICED, f"the same flood from attackers at lower priority (nice {niceness})")
    flood_rows(FLOOD_DEFAULT_WORKERS, "the same flood against the default worker count")
    row("/health p50 / p99 / max, 300 slowloris connections",
        lambda r: f"{_ms(r['slowloris']['health']['p50_ms'])} / {_ms(r['slowloris']['health']['p99_ms'])} / "
                  f"{_ms(r['slowloris']['health']['max_ms'])}")
    row("slowloris connections closed by the server by the end",
        lambda r: f"{r['slowloris']['closed_by_server']} of {r['slowloris']['opened']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
