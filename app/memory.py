"""Handing freed heap memory back to the operating system after a large rebuild.

Building a catalogue of a million movies streams millions of short-lived Python objects through
the heap; once they are freed, glibc keeps most of that memory in its free lists, so every worker
stayed ~80 MB larger than the arrays it kept (measured with /proc/self/smaps_rollup, see
docs/benchmarks.md). ``malloc_trim(0)`` returns it. It is called after a model version is loaded
and after the popularity table is rebuilt: rare events, a few milliseconds each.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


#: glibc's mallopt parameter M_ARENA_MAX (malloc.h).
_M_ARENA_MAX = -8
#: Malloc arenas a server process may use (see limit_malloc_arenas).
SERVER_MALLOC_ARENAS = 2


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).mallopt if name else None  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def limit_malloc_arenas(arenas: int = SERVER_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX`` would); True if it did. An explicit
    ``MALLOC_ARENA_MAX`` in the environment wins.

    glibc gives threads their own arenas, up to 8 per core, and each keeps the memory freed in
    it: a server worker's 40 request threads, each allocating numpy temporaries of a million
    movies (the allowed-rows mask, its packed bits), left ~30 MiB of private arenas per worker
    (1M movies, 4 workers: 76 -> 47 MiB of private anonymous memory per worker with 2 arenas;
    docs/benchmarks.md#worker-memory). Small objects are Python's own allocator under the GIL,
    so fewer arenas cost little contention. Call it before threads start (the setting is read
    when a thread first allocates); forked workers inherit it.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = _mallopt()
    return bool(mallopt(_M_ARENA_MAX, arenas)) if mallopt is not None else False


def release_free_memory() -> bool:
    """Return free heap memory to the operating system where the C library can; True if it did."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
