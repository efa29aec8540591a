#!/usr/bin/env python3
"""`make compose-test`: docker-compose.yml on a real Docker Engine, the way a user meets it, and a
table of what held.

The scenario runs in a compose project of its own (``movierec-test-<pid>``, its own volumes, a free
loopback port, images tagged ``test-<checkout>``, an empty env file), so a developer's stack and
``.env`` are never touched, and it ends with ``down --volumes`` whatever happened. In order:

1. ``make compose-up``'s failure modes, each one line and nothing left started: no engine, the
   port taken, a failed build.
2. The images built (stand-in base images first where Docker Hub is out of reach); the stack up
   (``scripts/docker/stack.py``'s ``up``, as ``make compose-up``) until ``/ready`` is 200 with the
   first trained model; ``/ready``, ``/predict``, ``/recommend``, ``POST /ratings`` (with
   ``MOVIEREC_API_KEY`` set) and the front page through the proxy.
3. ``docker compose run --rm trainer`` publishes version 2, and the running API serves it without
   a restart; a trainer killed halfway leaves version 2 served.
4. ``--scale api=3``: three healthy replicas all answering through the proxy, and a rating POSTed
   through it reflected at once in ``/recommend`` answered by each replica directly.
5. One replica killed (``docker kill``) under a bounded loopback load of rating writes: every
   acknowledged (201) rating is in the database.
6. ``docker compose restart db``: ``/ready`` answers 503, then 200 again by itself.
7. ``down`` then ``up``: ratings and model versions still there; ``down --volumes``: nothing left.

Exit status 0 when every row held. Standard library only; run from the repository root:

    python scripts/docker/compose_test.py [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack import REPO, Stack, StackError, engine_problem, http_get

API_KEY = "compose-test-key"
#: A user id far above MovieLens's (1..943): unknown to every model, so /recommend folds them in.
NEW_USER = 990_001
#: The kill test's writers: users from here on, one (user, movie) pair per request.
LOAD_USERS = 980_000
LOAD_SECONDS = 20.0
LOAD_MAX_REQUESTS = 2000
LOAD_THREADS = 4


def log(message: str) -> None:
    print(f"[compose-test {time.monotonic() - T0:6.0f}s] {message}", flush=True)


T0 = time.monotonic()


class Failed(AssertionError):
    """A row did not hold; the message says what was seen."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


@dataclass
class Row:
    name: str
    held: bool | None = None  # None: not run
    seconds: float = 0.0
    detail: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
            timeout: float = 10) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON or text, headers); connection failures are status 0."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, raw, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), dict(exc.headers)
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc), {}
    try:
        return status, json.loads(raw), got
    except ValueError:
        return status, raw.decode(errors="replace"), got


class Scenario:
    """The rows, the project they run in, and what they observed."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.rows: list[Row] = []
        self.env_file = Path(tempfile.mkstemp(prefix="movierec-compose-test-", suffix=".env")[1])
        checkout = hashlib.sha256(str(REPO).encode()).hexdigest()[:8]
        self.stack = Stack(project=f"movierec-test-{os.getpid()}", env_file=self.env_file, persist=False,
                           overrides={"API_PORT": str(free_port()), "MOVIEREC_TAG": f"test-{checkout}",
                                      "MOVIEREC_API_KEY": API_KEY, "MOVIEREC_RELOAD_INTERVAL": "1"},
                           log=log)
        self.url = self.stack.base_url
        self.acked: list[tuple[int, int, float]] = []
        self.posted: tuple[int, int, float] | None = None

    # -- running rows --

    def run(self, name: str, fn: Callable[[], str], needs: Row | None = None) -> Row:
        row = Row(name)
        self.rows.append(row)
        if needs is not None and not needs.held:
            row.detail = f"not run: `{needs.name}` did not hold"
            log(f"SKIP {name}: {row.detail}")
            return row
        log(f"---- {name}")
        started = time.monotonic()
        try:
            row.detail = fn()
            row.held = True
        except (Failed, StackError, subprocess.TimeoutExpired, subprocess.CalledProcessError) as exc:
            row.held, row.detail = False, str(exc).strip().splitlines()[0][:400] if str(exc).strip() else repr(exc)
        except Exception as exc:  # noqa: BLE001 - a bug in a row still fills the table
            row.held, row.detail = False, f"{type(exc).__name__}: {exc}"[:400]
        row.seconds = time.monotonic() - started
        log(f"{'HELD' if row.held else 'FAILED'} {name} ({row.seconds:.0f} s): {row.detail}")
        return row

    def compose(self, *args: str, timeout: float = 600, check_rc: bool = True) -> subprocess.CompletedProcess[str]:
        return self.stack.compose(*args, timeout=timeout, check=check_rc)

    def stack_py(self, *args: str, env: dict[str, str] | None = None, timeout: float = 900
                 ) -> subprocess.CompletedProcess[str]:
        """``scripts/docker/stack.py ARGS`` as `make compose-up` runs it, in this scenario's project."""
        cmd = [sys.executable, str(REPO / "scripts" / "docker" / "stack.py"), "--project-name", self.stack.project,
               "--env-file", str(self.env_file), "--no-record", *args]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              env={**self.stack.env, **(env or {})}, timeout=timeout)

    def containers(self) -> list[dict[str, Any]]:
        return self.stack.containers()

    def api_containers(self) -> list[dict[str, Any]]:
        return sorted((c for c in self.containers() if c.get("Service") == "api" and c.get("State") == "running"),
                      key=lambda c: c["Name"])

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise Failed(f"{what}: not within {timeout:.0f} s")
            time.sleep(interval)

    def ready(self) -> tuple[int, Any]:
        return http_get(f"{self.url}/ready")

    def model_version(self) -> int | None:
        status, body = self.ready()
        return body.get("model_version") if status == 200 and isinstance(body, dict) else None

    def in_replica(self, index: int, path: str) -> tuple[int, Any]:
        """GET ``path`` from inside api replica ``index`` (its own port 8000, not through the proxy)."""
        script = ("import json, sys, urllib.request, urllib.error\n"
                  "try:\n"
                  f"    r = urllib.request.urlopen('http://127.0.0.1:8000{path}', timeout=10); s, b = r.status, r.read()\n"
                  "except urllib.error.HTTPError as e:\n"
                  "    s, b = e.code, e.read()\n"
                  "print(json.dumps({'status': s, 'body': b.decode()}))\n")
        proc = self.compose("exec", "-T", "--index", str(index), "api", "python", "-c", script, timeout=120)
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
        try:
            return answer["status"], json.loads(answer["body"])
        except ValueError:
            return answer["status"], answer["body"]

    def sql(self, query: str) -> list[list[str]]:
        proc = self.compose("exec", "-T", "db", "psql", "--username=movierec", "--dbname=movierec", "-At", "-F", "\t",
                            "-c", query, timeout=120)
        return [line.split("\t") for line in proc.stdout.splitlines() if line.strip()]

    def store_versions(self) -> list[int]:
        """The versions in the model store (the `models` volume), read by `movierec models list`."""
        proc = self.compose("run", "--rm", "--no-deps", "-T", "api", "movierec", "models", "list", "--json",
                            timeout=300)
        return sorted(int(row["version"]) for row in json.loads(proc.stdout[proc.stdout.index("["):]))

    # -- the rows --

    def failure_modes(self) -> list[str]:
        """make compose-up's failures: one line each (the last line of stderr), nothing started."""
        seen = []
        cases = [
            ("no engine", {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "no Docker Engine answers"),
            ("failed build", {"PYTHON_IMAGE": "movierec-base/no-such-image:0", "BASE_IMAGES": "official"},
             "building the trainer image failed"),
        ]
        for name, env, expected in cases:
            proc = self.stack_py("up", "--timeout", "60", env=env, timeout=600)
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            check(proc.returncode == 1 and lines and lines[-1].startswith("error: ") and expected in lines[-1],
                  f"{name}: exit {proc.returncode}, stderr {proc.stderr.strip()[-300:]!r}")
            check(not self.containers(), f"{name}: containers left: {self.containers()}")
            seen.append(f"{name}: \"{lines[-1].removeprefix('error: ')[:48]}…\"")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            proc = self.stack_py("up", env={"API_PORT": str(port)}, timeout=300)
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            check(proc.returncode == 1 and len(lines) == 1 and f"port 127.0.0.1:{port} is taken" in lines[0],
                  f"port taken: exit {proc.returncode}, stderr {proc.stderr.strip()[-300:]!r}")
            check(not self.containers(), f"port taken: containers left: {self.containers()}")
            seen.append(f"port taken: \"{lines[0].removeprefix('error: ')[:48]}…\"")
        return "exit 1 and one line each, no container left: " + "; ".join(seen)

    def build(self) -> str:
        started = time.monotonic()
        self.stack.choose_base_images()
        self.stack.build()
        sizes = []
        for image in (f"movierec:{self.stack.env['MOVIEREC_TAG']}", f"movierec-trainer:{self.stack.env['MOVIEREC_TAG']}"):
            out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True,
                                 text=True, check=True, timeout=60).stdout
            sizes.append(f"{image.split(':')[0]} {int(out) / 1e9:.2f} GB")
            check(int(out) <= 1.5e9, f"{image} is {int(out) / 1e9:.2f} GB (target <= 1.5 GB)")
        self.build_seconds = time.monotonic() - started
        return f"{', '.join(sizes)}; {self.build_seconds:.0f} s"

    def up(self) -> str:
        ready = self.stack.up(timeout=900, build=False)
        check(ready.get("model_version") == 1, f"/ready {ready}")
        return f"/ready 200 with model version 1, {ready['seconds']:.0f} s after `up`"

    def endpoints(self) -> str:
        status, body, _ = request("GET", f"{self.url}/ready")
        check(status == 200 and body.get("database") is True, f"/ready {status} {body}")
        status, body, _ = request("GET", f"{self.url}/predict?user_id=1&movie_id=50")
        check(status == 200 and 0.5 <= float(body["rating"]) <= 5, f"/predict {status} {body}")
        predicted = float(body["rating"])
        status, body, _ = request("GET", f"{self.url}/recommend?user_id=1&n=5")
        check(status == 200 and len(body["items"]) == 5 and body["personalized"], f"/recommend {status} {body}")
        movie = body["items"][0]["movie_id"]
        rating = {"user_id": NEW_USER, "movie_id": movie, "rating": 5}
        status, body, _ = request("POST", f"{self.url}/ratings", rating)
        check(status == 401, f"POST /ratings without the key: {status} {body}")
        status, body, _ = request("POST", f"{self.url}/ratings", rating, headers={"X-API-Key": API_KEY})
        check(status == 201 and body["movie_id"] == movie, f"POST /ratings: {status} {body}")
        self.posted = (NEW_USER, movie, 5.0)
        status, body, headers = request("GET", f"{self.url}/")
        check(status == 200 and "text/html" in headers.get("content-type", headers.get("Content-Type", ""))
              and "<html" in str(body).lower(), f"front page: {status} {str(body)[:200]}")
        return (f"/ready 200, /predict(1, 50) = {predicted:.2f}, /recommend 5 items, POST /ratings 401 without "
                f"the key and 201 with it, / serves the front end")

    def started_at(self) -> dict[str, str]:
        """When each running api container started (changes if one is restarted or recreated)."""
        names = [c["Name"] for c in self.api_containers()]
        out = subprocess.run(["docker", "inspect", "--format", "{{.Name}} {{.State.StartedAt}}", *names],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())

    def retrain(self) -> str:
        before, started_at = self.model_version(), self.started_at()
        started = time.monotonic()
        self.compose("run", "--rm", "-T", "trainer", timeout=1200)
        trained = time.monotonic() - started
        self.wait("the API serving version 2", lambda: self.model_version() == 2, timeout=60)
        check(self.started_at() == started_at, f"the api was restarted: {started_at} -> {self.started_at()}")
        return f"version {before} -> 2, served by the same api container ({trained:.0f} s to train)"

    def failed_trainer(self) -> str:
        """A trainer killed halfway publishes nothing; the API keeps serving what it served."""
        name = f"{self.stack.project}-trainer-killed"
        cmd = [*self.stack.cli, "--project-name", self.stack.project, "--file", str(REPO / "docker-compose.yml"),
               "--env-file", str(self.env_file), "run", "--rm", "-T", "--name", name, "trainer"]
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            # Kill it once it is training (its first epoch line), not while it starts.
            deadline = time.monotonic() + 600
            for line in proc.stdout:  # type: ignore[union-attr]
                if "epoch" in line or time.monotonic() > deadline:
                    break
            subprocess.run(["docker", "kill", name], capture_output=True, timeout=60)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        check(code != 0, f"the killed trainer run exited {code}")
        time.sleep(3)  # more than MOVIEREC_RELOAD_INTERVAL: a new version would have been picked up
        check(self.model_version() == 2, f"serving {self.model_version()} after a failed training")
        versions = self.store_versions()
        check(max(versions) == 2, f"store versions {versions}")
        return f"trainer killed while training (exit {code}): store {versions}, API still serves version 2"

    def scale(self) -> str:
        self.compose("up", "--detach", "--no-build", "--no-recreate", "--scale", "api=3", "api", "proxy", timeout=600)

        def healthy() -> list[dict[str, Any]] | None:
            replicas = self.api_containers()
            return replicas if len(replicas) == 3 and all("healthy" in c.get("Status", "") and "unhealthy" not in
                                                          c.get("Status", "") for c in replicas) else None

        self.wait("three healthy api replicas", healthy, timeout=180, interval=2)
        served: set[str] = set()

        def balanced() -> bool:
            for _ in range(12):
                status, _, headers = request("GET", f"{self.url}/health")
                if status == 200:
                    served.add(headers.get("X-Served-By", headers.get("x-served-by", "?")))
            return len(served) >= 3

        self.wait("answers from three replicas through the proxy", balanced, timeout=60, interval=1)
        # A rating through the proxy, then each replica on its own: the new user is folded in from it.
        user, movie, _ = self.posted or (NEW_USER, 0, 0)
        status, body, _ = request("POST", f"{self.url}/ratings", {"user_id": user, "movie_id": 50, "rating": 1},
                                  headers={"X-API-Key": API_KEY})
        check(status == 201, f"POST /ratings: {status} {body}")
        seen = []
        for index in (1, 2, 3):
            status, body = self.in_replica(index, f"/recommend?user_id={user}&n=20")
            items = [item["movie_id"] for item in body.get("items", [])] if isinstance(body, dict) else []
            check(status == 200 and body["personalized"] and body["source"] == "fold_in",
                  f"replica {index}: {status} {body}")
            check(50 not in items and movie not in items, f"replica {index} recommends a movie the user rated: {items}")
            status, ratings = self.in_replica(index, f"/users/{user}/ratings")
            check(status == 200 and {r["movie_id"] for r in ratings} >= {50, movie}, f"replica {index}: {ratings}")
            seen.append(index)
        return (f"3 healthy replicas, proxy answers from {sorted(served)}; a rating POSTed through the proxy is "
                f"folded in by replicas {seen} at once")

    def kill_under_load(self) -> str:
        replicas = self.api_containers()
        check(len(replicas) == 3, f"{len(replicas)} replicas running")
        victim = replicas[1]["Name"]
        stop = threading.Event()
        lock = threading.Lock()
        counts = {"sent": 0, "201": 0, "other": 0}
        acked: list[tuple[int, int, float]] = []
        deadline = time.monotonic() + LOAD_SECONDS

        def writer(worker: int) -> None:
            n = 0
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    if counts["sent"] >= LOAD_MAX_REQUESTS:
                        return
                    counts["sent"] += 1
                n += 1
                # One rating per (user, movie), the same value if a worker ever comes round again.
                movie = 1 + (n - 1) % 1682
                rating = {"user_id": LOAD_USERS + worker, "movie_id": movie, "rating": float(1 + movie % 5)}
                status, _, _ = request("POST", f"{self.url}/ratings", rating, headers={"X-API-Key": API_KEY})
                with lock:
                    if status == 201:
                        counts["201"] += 1
                        acked.append((rating["user_id"], rating["movie_id"], rating["rating"]))
                    else:
                        counts["other"] += 1

        threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(LOAD_THREADS)]
        for thread in threads:
            thread.start()
        time.sleep(LOAD_SECONDS / 3)
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True, timeout=60)
        killed_at = counts["sent"]
        for thread in threads:
            thread.join(timeout=LOAD_SECONDS + 30)
        stop.set()
        rows = self.sql(f"SELECT user_id, movie_id, rating FROM ratings WHERE user_id >= {LOAD_USERS} "
                        f"AND user_id < {LOAD_USERS + LOAD_THREADS}")
        stored = {(int(u), int(m)): float(r) for u, m, r in rows}
        lost = [a for a in acked if stored.get((a[0], a[1])) != a[2]]
        check(counts["201"] > 50, f"too few writes acknowledged to judge: {counts}")
        check(not lost, f"{len(lost)} acknowledged ratings missing or wrong, e.g. {lost[:3]}")
        self.acked = acked
        return (f"{victim} killed after {killed_at} of {counts['sent']} writes: {counts['201']} acknowledged, "
                f"all {len(acked)} in the database; {counts['other']} refused during the kill")

    def restart_db(self) -> str:
        # A plain `restart` keeps the database away for about a second, which the API rides through:
        # its connect attempt is a TCP handshake that the restarted server answers on a retransmit,
        # so a 503 is seen only sometimes. The restart is therefore checked in its two halves, the
        # database down long enough to be seen (503, with the reason), then back (200 by itself),
        # and then as one `restart`, after which /ready must come back by itself.
        def unavailable() -> tuple[int, Any] | None:
            answer = http_get(f"{self.url}/ready", timeout=15)  # past the API's 5 s connect timeout
            return answer if answer[0] == 503 else None

        self.compose("stop", "db", timeout=300)
        started = time.monotonic()
        _, body = self.wait("/ready 503 while the database is stopped", unavailable, timeout=120, interval=0.5)
        down_after = time.monotonic() - started
        check(isinstance(body, dict) and body.get("database") is False, f"/ready 503 for another reason: {body}")
        self.compose("start", "db", timeout=300)
        started = time.monotonic()
        self.wait("/ready 200 after the database started", lambda: self.ready()[0] == 200, timeout=180, interval=1)
        up_after = time.monotonic() - started
        self.compose("restart", "db", timeout=300)
        started = time.monotonic()
        self.wait("/ready 200 after `restart db`", lambda: self.ready()[0] == 200, timeout=180, interval=1)
        return (f"db stopped: /ready 503 (database unreachable) {down_after:.0f} s after; started: 200 again "
                f"{up_after:.0f} s after; `restart db`: 200 {time.monotonic() - started:.0f} s after")

    def down_up(self) -> str:
        versions_before = self.store_versions()
        self.compose("down", "--remove-orphans", timeout=300)
        check(not self.containers(), f"containers after down: {self.containers()}")
        ready = self.stack.up(timeout=600)
        rows = self.sql(f"SELECT user_id, movie_id, rating FROM ratings WHERE user_id >= {LOAD_USERS}")
        stored = {(int(u), int(m)): float(r) for u, m, r in rows}
        missing = [a for a in self.acked if stored.get((a[0], a[1])) != a[2]]
        check(not missing, f"{len(missing)} ratings gone after down/up")
        check((NEW_USER, 50) in stored, "the rating POSTed through the proxy is gone")
        versions = self.store_versions()
        check(set(versions_before) <= set(versions), f"versions {versions_before} -> {versions}")
        return (f"after down + up: {len(stored)} posted ratings kept, store versions {versions_before} -> {versions}, "
                f"/ready 200 in {ready['seconds']:.0f} s")

    def down_volumes(self) -> str:
        self.compose("down", "--volumes", "--remove-orphans", timeout=300)
        left = []
        label = f"label=com.docker.compose.project={self.stack.project}"
        for kind, args in (("container", ["--all"]), ("volume", []), ("network", [])):
            out = subprocess.run(["docker", kind, "ls", *args, "--quiet", "--filter", label],
                                 capture_output=True, text=True, timeout=60).stdout.split()
            if out:
                left.append(f"{kind}s {out}")
        check(not left, f"left behind: {left}")
        return "no container, volume or network of the project left"

    # -- the whole run --

    def main(self) -> int:
        try:
            problem = engine_problem()
            if problem:
                print(f"compose-test: {problem}", file=sys.stderr)
                return 2
            self.run("make compose-up failures: one line, nothing started", self.failure_modes)
            built = self.run("images built", self.build)
            up = self.run("stack up: /ready 200 with a trained model", self.up, needs=built)
            self.run("/ready, /predict, /recommend, POST /ratings, front page via the proxy", self.endpoints, needs=up)
            retrained = self.run("compose run --rm trainer -> version 2 served, no restart", self.retrain, needs=up)
            self.run("failed trainer run: previous version still served", self.failed_trainer, needs=retrained)
            scaled = self.run("--scale api=3: all replicas answer; a rating shows in each at once", self.scale,
                              needs=up)
            self.run("docker kill of a replica under load: no acknowledged rating lost", self.kill_under_load,
                     needs=scaled)
            self.run("compose restart db: /ready 503, then 200 by itself", self.restart_db, needs=up)
            self.run("down, then up: ratings and models still there", self.down_up, needs=up)
        finally:
            if not self.keep:
                self.run("down --volumes: clean", self.down_volumes)
            self.env_file.unlink(missing_ok=True)
        print(self.table(), flush=True)
        return 0 if all(row.held for row in self.rows) else 1

    def table(self) -> str:
        width = max(len(row.name) for row in self.rows)
        lines = [f"compose-test on a real Docker Engine (project {self.stack.project}):", "",
                 f"| {'check'.ljust(width)} | result | time   | what was seen",
                 f"|{'-' * (width + 2)}|--------|--------|--------------"]
        for row in self.rows:
            result = "held" if row.held else ("FAILED" if row.held is False else "-")
            lines.append(f"| {row.name.ljust(width)} | {result:<6} | {row.seconds:5.0f}s | {row.detail}")
        held = sum(1 for row in self.rows if row.held)
        lines += ["", f"compose-test: {held} of {len(self.rows)} held"]
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack and its volumes up at the end")
    args = parser.parse_args(argv)
    return Scenario(keep=args.keep).main()


if __name__ == "__main__":
    sys.exit(main())
