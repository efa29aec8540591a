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
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def release_free_memory() -> bool:
    """Return free heap memory to the operating system where the C library can; True if it did."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
