"""The trainer SIGKILLed at random points, including inside every step of publish.

After each kill: every version the store shows loads completely (no half-written version is ever
visible), the version in CURRENT is intact, a running API keeps serving the previous model (or
the new one, if the kill came after CURRENT was switched), the store lock is free, and the next
publish succeeds and cleans up what the dead writer left.

Exact kill points inside publish come from tests/reliability/stop_at.py, which freezes the real
program (SIGSTOP) just before the chosen filesystem step; the test then SIGKILLs it there.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

psutil = pytest.importorskip("psutil", reason="psutil is not installed (it belongs in the test extra)")

from movierec.store import ModelStore

from .conftest import N_MOVIES, Stack
from .harness import MOVIEREC, REPO_ROOT, check_store, kill_group, knob, record, running_server, write_udata
from .stop_at import fork_publish

SEED = int(time.time()) % 10_000


class Watched:
    """A subprocess whose stderr lines are collected by a thread (so it never blocks on a pipe)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_stopped_or_exit(self, timeout: float) -> str:
        """'stopped' once frozen by SIGSTOP, 'exited' if it finished first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "exited"
            try:
                if psutil.Process(self.proc.pid).status() == psutil.STATUS_STOPPED:
                    return "stopped"
            except psutil.NoSuchProcess:
                return "exited"
            time.sleep(0.02)
        raise TimeoutError("process neither stopped nor exited:\n" + "\n".join(self.lines[-30:]))

    def wait_line(self, count: int, timeout: float) -> bool:
        """True once ``count`` stderr lines arrived; False if the process exited first."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            if self.proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise TimeoutError("\n".join(self.lines[-30:]))
            time.sleep(0.01)
        return True

    def kill(self) -> None:
        kill_group(self.proc, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=5)


def steps_of(lines: list[str]) -> list[str]:
    return [line.split(" ", 2)[2] for line in lines if line.startswith("STEP ")]


def expected_after_stop(steps: list[str], before: tuple[list[int], int | None]) -> str:
    """What the store must look like after a kill just before the last announced step."""
    stopped = steps[-1]
    if stopped.startswith("rename .tmp-") or not any(s.startswith("rename .tmp-") for s in steps):
        return "unchanged"  # killed before the version was renamed into place
    if not any(s.startswith("replace") for s in steps) or stopped.startswith("replace"):
        return "new version visible, CURRENT not yet switched"
    return "new version current"


def served_version(url: str, expected: int, timeout: float = 10.0) -> int:
    """Wait until the API serves ``expected`` (the poller reacts within its interval); return it."""
    deadline = time.monotonic() + timeout
    while True:
        version = httpx.get(url + "/model", timeout=10).json()["version"]
        if version == expected or time.monotonic() > deadline:
            return version
        time.sleep(0.1)


def assert_serving(url: str, version: int) -> None:
    assert served_version(url, version) == version
    assert httpx.get(url + "/ready", timeout=10).status_code == 200
    r = httpx.get(url + "/predict", params={"user_id": 2, "movie_id": 3}, timeout=10)
    assert r.status_code == 200 and r.json()["model_version"] == version, r.text


def run_forked_publish(store: Path, seed: int, keep: int, stop: int) -> tuple[str, list[str]]:
    """Fork a publisher frozen before step ``stop``; SIGKILL it there. Returns (state, its lines)."""
    pid, fd = fork_publish(store, seed, keep, stop)
    state = "running"
    deadline = time.monotonic() + 60
    while state == "running":
        done, status = os.waitpid(pid, os.WUNTRACED | os.WNOHANG)
        if done and os.WIFSTOPPED(status):
            state = "stopped"
        elif done:
            state = "exited" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else f"failed ({status})"
        elif time.monotonic() > deadline:
            state = "timeout"
        else:
            time.sleep(0.005)
    if state in ("stopped", "timeout"):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with os.fdopen(fd) as fh:
        lines = fh.read().splitlines()
    assert state in ("stopped", "exited"), (state, lines)
    return state, lines


def test_kill_at_every_publish_step(stack: Stack) -> None:
    """A publishing process SIGKILLed before each filesystem step of publish (pruning included)."""
    print(f"random seed {SEED}")  # shown with a failure: rerun the same kill order
    rng = random.Random(SEED)
    rounds = knob("publish_kill_rounds", 3, 30)
    store = stack.store
    outcomes: dict[str, int] = {}
    kills = 0
    with running_server(stack.env, stack.workdir) as server:
        server.wait_for("/ready")
        total_steps = 10  # 9 for a publish, 1 more once pruning starts (keep=2 below)
        for _ in range(rounds):
            order = list(range(1, total_steps + 1))
            rng.shuffle(order)
            for stop in order:
                before = (ModelStore(store).versions(), ModelStore(store).current_version())
                served_before = served_version(server.url, before[1] or -1)
                state, lines = run_forked_publish(store, rng.randrange(10**6), 2, stop)
                kills += state == "stopped"
                steps = steps_of(lines)
                summary = check_store(store)
                after = summary["current"]
                if state == "exited":  # fewer steps than `stop` (no pruning this time): it completed
                    outcome = "completed"
                    assert after == max(summary["versions"])
                else:
                    outcome = expected_after_stop(steps, before)
                    if outcome == "unchanged":
                        assert summary["versions"] == before[0] and after == before[1], (steps, summary)
                    elif outcome.startswith("new version visible"):
                        assert after == before[1] and max(summary["versions"]) > max(before[0]), (steps, summary)
                    else:
                        assert after == max(summary["versions"]) and after != before[1], (steps, summary)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                assert after is not None
                # The API serves the store's current version: the previous one unless CURRENT was switched.
                assert after in (served_before, max(summary["versions"]))
                assert_serving(server.url, after)
        # The lock is free and a normal publish cleans every leftover of the dead writers.
        state, lines = run_forked_publish(store, 1, 2, 0)
        assert state == "exited", lines
        summary = check_store(store)
        assert summary["leftovers"] == [], summary
        assert_serving(server.url, summary["current"])
    record("trainer kill", "publishing process SIGKILLed before each filesystem step of publish/prune", kills,
           "store held only complete versions; API served the previous version (or the new one once CURRENT "
           "was switched); next publish cleaned up: " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))


def test_real_trainer_killed_at_random_points(stack: Stack, tmp_path: Path) -> None:
    """`movierec train` SIGKILLed at a random moment of training, and frozen+killed inside publish."""
    print(f"random seed {SEED + 1}")
    rng = random.Random(SEED + 1)
    udata = write_udata(tmp_path / "ml" / "u.data", n_users=60, n_movies=N_MOVIES, per_user=15)
    train_args = ["train", "--source", str(udata), "--epochs", "3", "--factors", "4", "--force"]
    random_kills = knob("trainer_random_kills", 1, 8)
    publish_kills = knob("trainer_publish_kills", 1, 9)
    log: list[str] = []
    with running_server(stack.env, stack.workdir) as server:
        server.wait_for("/ready")
        previous = ModelStore(stack.store).current_version()
        # 1. Random moments of a training run: after a random number of its progress lines.
        for _ in range(random_kills):
            proc = Watched([MOVIEREC, *train_args], stack.env, stack.workdir)
            wanted = rng.randint(1, 14)  # a run prints ~16 lines with --epochs 3
            reached = proc.wait_line(wanted, timeout=120)
            time.sleep(rng.uniform(0, 0.3))
            proc.kill()
            log.append(f"after line {wanted}: " + (proc.lines[-1] if proc.lines else "(nothing)")
                       + ("" if reached else " [had exited]"))
            summary = check_store(stack.store)
            assert summary["current"] in (previous, max(summary["versions"]))
            previous = summary["current"]
            assert_serving(server.url, previous)
        # 2. Inside publish: freeze the real trainer before a random filesystem step, then kill it.
        for _ in range(publish_kills):
            stop = rng.randint(1, 9)
            before = (ModelStore(stack.store).versions(), ModelStore(stack.store).current_version())
            proc = Watched([sys.executable, "-m", "tests.reliability.stop_at", "cli", *train_args],
                           {**stack.env, "MOVIEREC_STOP_AT": str(stop)}, REPO_ROOT)
            state = proc.wait_stopped_or_exit(180)
            proc.kill()
            assert state == "stopped", proc.lines[-20:]
            steps = steps_of(proc.lines)
            log.append(f"publish step {stop}: {steps[-1]}")
            summary = check_store(stack.store)
            outcome = expected_after_stop(steps, before)
            if outcome == "unchanged":
                assert summary["versions"] == before[0] and summary["current"] == before[1]
            elif outcome.startswith("new version visible"):
                assert summary["current"] == before[1]
            else:
                assert summary["current"] == max(summary["versions"])
            assert_serving(server.url, summary["current"])
        # 3. A run to completion afterwards publishes normally and is served without a restart.
        done = subprocess.run([MOVIEREC, *train_args], check=False, env=stack.env, cwd=stack.workdir, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = check_store(stack.store)
        assert summary["leftovers"] == []
        assert_serving(server.url, summary["current"])
    record("trainer kill", "`movierec train` SIGKILLed at a random progress line", random_kills,
           "store intact, API kept serving the previous version", kill_points="; ".join(log[:random_kills]))
    record("trainer kill", "`movierec train` frozen before a random publish step, then SIGKILLed", publish_kills,
           "only complete versions visible, API served CURRENT, next train published normally",
           kill_points="; ".join(log[random_kills:]))


def test_trainer_manifest_data_snapshot_reaches_the_api(tmp_path: Path) -> None:
    """The API folds in users who rated after training from ``snapshot_max_rated_at``; the trainer
    must record the snapshot under the key the API reads, or nobody is ever treated as stale."""
    pytest.importorskip("torch")
    from app.scoring import LoadedModel
    from trainer.data import load_files
    from trainer.fit import defaults_for
    from trainer.pipeline import train_and_publish

    udata = write_udata(tmp_path / "ml" / "u.data", n_users=30, n_movies=20, per_user=8)
    params = defaults_for("dot")
    params.epochs, params.factors = 1, 2
    store = ModelStore(tmp_path / "models")
    train_and_publish(lambda: load_files(udata), store, params, force=True)
    newest = int(np.loadtxt(udata, dtype=np.int64)[:, 3].max())
    model = LoadedModel(store.load())
    assert model.snapshot_max_rated_at == newest, (
        f"trainer manifest keys {sorted(model.manifest)}; the API reads manifest['data_snapshot']")
