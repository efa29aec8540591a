"""Thread policy of a fit: how many threads it starts with, and falling back to one on a busy machine.

Kept apart from the loops (as implicit keeps its thread policy in ``implicit/utils.py``): the
step's kernels are a chain of short parallel loops, so how many threads pay depends on how busy
the machine is, not on the model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numba
import torch


def default_threads() -> int:
    """The cores this process may use, less those that other work keeps busy (the 1-minute load average).

    The training step is a chain of short parallel loops that each wait for their slowest
    thread. A thread that shares its core with another busy process is descheduled for whole
    time slices, and every loop waits for it: at 5M ratings, with one busy process beside it on
    our 2-core machine, 2 threads trained at 0.23M ratings/s and 1 thread at 1.9M. Idle cores
    are what make more threads pay.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cpus, cpus - int(busy + 0.5)))


def set_threads() -> int:
    """Set torch's and numba's thread counts: ``MOVIEREC_TRAIN_THREADS`` or :func:`default_threads`. Returns it."""
    wanted = os.environ.get("MOVIEREC_TRAIN_THREADS", "")
    n = int(wanted) if wanted.isdigit() and int(wanted) > 0 else default_threads()
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return n


class ThreadGovernor:
    """Falls back to one thread when the step rate collapses, as when another process takes a core.

    The thread count is chosen when a fit starts (:func:`default_threads`), but a machine can get
    busy later, and then two threads are several times slower than one (see there). Steps are
    timed in windows of ``window`` steps within an epoch; a window that runs at less than
    1/``collapse`` of the best window's rate while more than one thread trains switches the
    rest of the fit to one thread. It never switches back: a fit that fell back once is on a
    busy machine. Small data sets (fewer steps an epoch than a window) are never judged.
    """

    def __init__(self, threads: int, window: int = 128, collapse: float = 3.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.threads, self.window, self.collapse, self.clock = threads, window, collapse, clock
        self.best = 0.0
        self.count = 0
        self.since = clock()
        #: The step (counted from 1 over the whole fit) after which training went to one thread.
        self.dropped_at: int | None = None

    def restart(self) -> None:
        """Start a new window (at an epoch's start: the shuffle between epochs is not a step)."""
        self.count = 0
        self.since = self.clock()

    def step(self, t: int) -> None:
        """Count step ``t``; judge the window when it is full."""
        self.count += 1
        if self.count < self.window:
            return
        now = self.clock()
        rate = self.count / max(now - self.since, 1e-9)
        self.count, self.since = 0, now
        if rate > self.best:
            self.best = rate
        elif self.threads > 1 and rate * self.collapse < self.best:
            self.threads = 1
            self.dropped_at = t
            torch.set_num_threads(1)
            numba.set_num_threads(1)
