"""A safetensors file as read-only numpy arrays over one memory map (the model store's loader).

Nothing is copied: the pages are the operating system's page cache, shared by every process that
maps the same file, so N server workers hold one copy of a model, not N (a copy per worker was most
of a worker's memory on a large catalogue; see docs/benchmarks.md#worker-memory).
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import numpy as np


class MalformedTensorsError(ValueError):
    """The file is not a well-formed safetensors file (or cannot be read)."""


#: safetensors dtype names -> numpy dtypes (little-endian, as the format stores them).
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
           "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}


def map_tensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as read-only arrays over one read-only memory map.

    Nothing is copied: the pages are the operating system's page cache, shared by every process
    that maps the same file, so N server workers hold one copy of a model, not N (a copy per
    worker was most of a worker's memory on a large catalogue; see docs/benchmarks.md). The
    header is parsed here (the format: an 8-byte little-endian length, a JSON header, the data)
    and every entry is checked against the file's size before anything is mapped; anything
    malformed raises :class:`MalformedTensorsError`. A version's file
    is never written again once published (the store writes a new directory), which is what
    makes mapping it safe.
    """
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise ValueError("shorter than its header length")
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len > size - 8:
                raise ValueError(f"header of {header_len} bytes in a file of {size}")
            header = json.loads(fh.read(header_len))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
            header.pop("__metadata__", None)
            data_start = 8 + header_len
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size > data_start else b""
        tensors = {}
        for name, entry in header.items():
            dtype = np.dtype(_DTYPES[entry["dtype"]])
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
            count = int(np.prod(shape, dtype=np.int64))
            if min(shape, default=0) < 0 or not 0 <= begin <= end <= size - data_start \
                    or end - begin != count * dtype.itemsize:
                raise ValueError(f"tensor {name!r}: offsets {begin}..{end} do not hold {shape} {entry['dtype']}")
            if count == 0:
                array = np.zeros(shape, dtype=dtype)
                array.setflags(write=False)
            else:  # read-only: the map is
                array = np.frombuffer(mapped, dtype=dtype, count=count, offset=data_start + begin).reshape(shape)
            tensors[str(name)] = array
        return tensors
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise MalformedTensorsError(str(exc)) from exc
