"""What impression recording costs, part by part, in CPU time (steadier than wall time on a shared machine).

usage: python -m bench.recording_cost [--impressions 20000] [--batch 200] [--url URL]

* request path: :func:`app.impressions.record_answer` with recording on minus off (the id and the
  headers are made either way), best of 5 runs, in this thread's CPU time;
* writer: :meth:`app.impressions.ImpressionRecorder.flush` of batches of ``--batch`` answers of 10
  random movies each (about what 200 ms of traffic at 1000 requests/s leaves waiting), into a freshly
  migrated database (a temporary SQLite file, or ``--url``, whose impressions are deleted first),
  in this thread's CPU time per answer: building the rows, the inserts and the commits.

``python -m bench.serving --only-recording`` measures the whole servers; this measures the parts.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from app.impressions import ImpressionRecorder, Shown, new_request_id, record_answer
from app.metrics import Metrics
from migrations import upgrade
from movierec.db.engine import make_engine, session_factory


def request_path_us(runs: int = 5, calls: int = 100_000) -> tuple[float, float]:
    """CPU microseconds of one ``record_answer`` with recording off and on (best of ``runs``)."""
    out = []
    for enabled in (False, True):
        recorder = ImpressionRecorder(None, Metrics(), enabled=enabled, queue_size=10**9, batch_rows=10**9)  # type: ignore[arg-type]
        best = float("inf")
        for _ in range(runs):
            start = time.thread_time()
            for _ in range(calls):
                record_answer(recorder, {}, user_id=5, model_version=1, source="model", endpoint="recommend",
                              movie_ids=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], role="current")
            best = min(best, (time.thread_time() - start) / calls)
            recorder._pending.clear()  # never written: only the request side is measured
        out.append(best * 1e6)
    return out[0], out[1]


def writer_us(url: str, impressions: int, batch: int, seed: int = 0) -> float:
    """The writer's CPU microseconds per answer of 10 movies, in batches of ``batch``."""
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM events"))
        conn.execute(text("DELETE FROM impressions"))
    recorder = ImpressionRecorder(session_factory(engine), Metrics(), batch_rows=batch)
    rng = random.Random(seed)

    def answers() -> list[Shown]:
        now = int(time.time())
        return [Shown(new_request_id(), rng.randint(1, 943), 1, "model", "recommend", now,
                      rng.sample(range(1, 1683), 10)) for _ in range(batch)]

    for _ in range(5):  # warm-up: connections, statement caches, the first pages of the table
        for shown in answers():
            recorder.record(shown)
        recorder.flush()
    cpu, done = 0.0, 0
    while done < impressions:
        for shown in answers():
            recorder.record(shown)
        start = time.thread_time()
        recorder.flush()
        cpu += time.thread_time() - start
        done += batch
    engine.dispose()
    return cpu / done * 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impressions", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--url", help="database to write into (default: a temporary SQLite file)")
    args = ap.parse_args(argv)
    off, on = request_path_us()
    print(f"request path: record_answer {off:.2f} us with recording off, {on:.2f} us on: +{on - off:.2f} us")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'impressions.db'}"
        per = writer_us(url, args.impressions, args.batch)
    print(f"writer: {per:.1f} us of CPU per answer of 10 movies ({url.split(':')[0]}, batches of {args.batch})")


if __name__ == "__main__":
    main()
