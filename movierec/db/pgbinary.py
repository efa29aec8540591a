"""PostgreSQL's binary COPY format for the ratings columns, encoded and decoded with numpy.

``COPY ... (FORMAT binary)`` sends each row as a field count and, per field, a length and the
value in network byte order. The ratings columns are all fixed-width and NOT NULL, so a row is a
fixed 42-byte record and a whole buffer of them is one numpy structured array: no Python object
per row in either direction (the importer writes with it, the trainer reads with it).
"""

from __future__ import annotations

import numpy as np

#: Signature, flags (no OIDs) and header-extension length that open every binary COPY stream.
HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
#: The field count -1 that ends the stream.
TRAILER = b"\xff\xff"

#: (column, big-endian numpy type) of ``ratings`` in COPY order: integer, integer, double precision, bigint.
COLUMNS: tuple[tuple[str, str], ...] = (("user_id", ">i4"), ("movie_id", ">i4"), ("rating", ">f8"),
                                        ("rated_at", ">i8"))
#: The SQL column list matching :data:`COLUMNS`.
COLUMN_LIST = ", ".join(name for name, _ in COLUMNS)


class CopyFormatError(ValueError):
    """A binary COPY stream does not hold the expected fixed-width, non-NULL rows."""


def _record(columns: tuple[tuple[str, str], ...]) -> np.dtype:
    fields: list[tuple[str, str]] = [("fields", ">i2")]
    for name, kind in columns:
        fields += [(f"{name}_length", ">i4"), (name, kind)]
    return np.dtype(fields)  # packed: no padding between fields, as on the wire


RECORD = _record(COLUMNS)


def encode(user_id: np.ndarray, movie_id: np.ndarray, rating: np.ndarray, rated_at: np.ndarray) -> bytes:
    """Rows of :data:`COLUMNS` as binary COPY tuples (without header or trailer)."""
    rows = np.empty(len(user_id), dtype=RECORD)
    rows["fields"] = len(COLUMNS)
    for (name, kind), values in zip(COLUMNS, (user_id, movie_id, rating, rated_at), strict=True):
        rows[f"{name}_length"] = np.dtype(kind).itemsize
        rows[name] = values
    return rows.tobytes()


def decode(body: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    """Columns (native byte order) of a binary COPY stream of :data:`COLUMNS`, header and trailer included."""
    view = memoryview(body).cast("B")
    if bytes(view[:len(HEADER)]) != HEADER or bytes(view[-len(TRAILER):]) != TRAILER:
        raise CopyFormatError("not a binary COPY stream (bad header or trailer)")
    payload = view[len(HEADER):len(view) - len(TRAILER)]
    if len(payload) % RECORD.itemsize:
        raise CopyFormatError("rows are not fixed-width (a NULL or an unexpected column type)")
    rows = np.frombuffer(payload, dtype=RECORD)
    ok = rows["fields"] == len(COLUMNS)
    for name, kind in COLUMNS:
        ok &= rows[f"{name}_length"] == np.dtype(kind).itemsize
    if not ok.all():
        raise CopyFormatError(f"row {int(np.argmin(ok))} is not {len(COLUMNS)} non-NULL fixed-width fields")
    return {name: rows[name].astype(np.dtype(kind).newbyteorder("=")) for name, kind in COLUMNS}


#: One row packed by the server with the ``*send`` functions (the binary wire form of each
#: column, concatenated): 24 bytes, no lengths, decoded by :func:`unpack`.
PACKED = np.dtype([(name, kind) for name, kind in COLUMNS])
_SEND = {">i4": "int4send", ">i8": "int8send", ">f8": "float8send"}
#: SQL expression packing one ratings row into :data:`PACKED` bytes.
PACK_EXPRESSION = " || ".join(f"{_SEND[kind]}({name})" for name, kind in COLUMNS)


def unpack(blob: bytes | memoryview) -> dict[str, np.ndarray]:
    """Columns (native byte order) of rows packed by :data:`PACK_EXPRESSION`."""
    if len(blob) % PACKED.itemsize:
        raise CopyFormatError(f"{len(blob)} bytes is not a whole number of {PACKED.itemsize}-byte rows")
    rows = np.frombuffer(blob, dtype=PACKED)
    return {name: rows[name].astype(np.dtype(kind).newbyteorder("=")) for name, kind in COLUMNS}
