"""The ratings importer under hostile files: all-or-nothing on SQLite and PostgreSQL.

* Hypothesis: a file of valid rows (some re-rating stored movies with newer timestamps, so a
  partial import would be visible) with one malformed line at a random place -- bad encodings
  (Latin-1, UTF-16, lone surrogates, NUL), huge and negative numbers, NaN/infinity, wrong field
  counts, unknown movies. The import raises DataFormatError naming the file (and the line, where
  there is one) and the database is exactly as before.
* The same through ``movierec import ratings``: exit 1, one ``error:`` line, no traceback.
* A bad row after the first 200 000-row chunk has already been sent to the database.
* ``movierec import ratings`` SIGKILLed in the middle of a large import: nothing or everything.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import SQLAlchemyError

from movierec.data.importer import import_ratings
from movierec.data.movielens import DataFormatError
from movierec.db.engine import DatabaseError, make_engine
from movierec.db.schema import Movie, Rating

from .harness import MOVIEREC, child_env, db_exec, db_rows, fresh_postgres, kill_group, knob, record

MOVIES = range(1, 21)
STORED = [(u, m, 3.0, 1_000) for u in range(1, 6) for m in range(1, 6)]


def prepare(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ratings"))
        conn.execute(text("DELETE FROM movies"))
        conn.execute(insert(Movie), [{"id": i, "title": f"Movie {i}", "year": 1990, "genres": "Drama"} for i in MOVIES])
        conn.execute(insert(Rating), [{"user_id": u, "movie_id": m, "rating": r, "rated_at": t} for u, m, r, t in STORED])


def snapshot(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(Rating.user_id, Rating.movie_id, Rating.rating, Rating.rated_at)
                                               .order_by(Rating.user_id, Rating.movie_id))]


SEPARATORS = {"u.data": "\t", "ratings.dat": "::", "ratings.csv": ","}

# Malformed lines as bytes (encoding is part of the fault), in the tab layout; {sep} is replaced.
BAD_FIELDS = [
    "2147483648{sep}1{sep}3{sep}100", "9223372036854775808{sep}1{sep}3{sep}100", "1{sep}" + "9" * 40 + "{sep}3{sep}100",
    "-1{sep}1{sep}3{sep}100", "0{sep}1{sep}3{sep}100", "1{sep}-5{sep}3{sep}100", "1{sep}0{sep}3{sep}100",
    "1{sep}1{sep}nan{sep}100", "1{sep}1{sep}NaN{sep}100", "1{sep}1{sep}inf{sep}100", "1{sep}1{sep}-inf{sep}100",
    "1{sep}1{sep}1e400{sep}100", "1{sep}1{sep}5.5{sep}100", "1{sep}1{sep}0{sep}100", "1{sep}1{sep}4.25{sep}100",
    "1{sep}1{sep}-0.5{sep}100", "1{sep}1{sep}3{sep}-1", "1{sep}1{sep}3{sep}" + "9" * 30, "1{sep}1{sep}3{sep}nan",
    "1{sep}1{sep}3{sep}1e30", "1{sep}1{sep}3{sep}32503680001", "1{sep}1{sep}3{sep}9223372036854775808",
    "1{sep}1", "1{sep}1{sep}3{sep}100{sep}7", "1{sep}{sep}3{sep}100", "x{sep}1{sep}3{sep}100", "1{sep}999{sep}3{sep}100",
    "1.5{sep}1{sep}3{sep}100", "1e3{sep}1{sep}3{sep}100", "0x10{sep}1{sep}3{sep}100",
]
BAD_BYTES = [
    b"1\t1\t3\t100 caf\xe9",  # Latin-1
    "1\t1\t3\t100".encode("utf-16"),  # UTF-16 with BOM and NULs
    b"1\t1\t3\t\xed\xa0\x80",  # an encoded lone surrogate (invalid UTF-8)
    b"1\x00\t1\t3\t100",  # NUL inside a field
    b"\xff\xfe\xfd",
    b"1\t1\t3\t100\xc3",  # truncated multi-byte sequence
]


def bad_line(sep: str) -> st.SearchStrategy[bytes]:
    fields = st.sampled_from(BAD_FIELDS).map(lambda f: f.replace("{sep}", sep).encode())
    if sep != "\t":
        return fields
    return st.one_of(fields, st.sampled_from(BAD_BYTES))


@st.composite
def hostile_file(draw: st.DrawFn) -> tuple[str, bytes, int]:
    name = draw(st.sampled_from(list(SEPARATORS)))
    sep = SEPARATORS[name]
    rows = draw(st.lists(st.tuples(st.integers(1, 40), st.sampled_from(list(MOVIES)), st.integers(1, 10),
                                   st.integers(2_000, 10**9)), min_size=1, max_size=60))
    lines = [f"{u}{sep}{m}{sep}{r / 2}{sep}{t}".encode() for u, m, r, t in rows]
    position = draw(st.integers(0, len(lines)))
    lines.insert(position, draw(bad_line(sep)))
    header = [b"userId,movieId,rating,timestamp"] if name == "ratings.csv" else []
    offset = len(header)
    return name, b"\n".join(header + lines) + b"\n", position + 1 + offset


@pytest.mark.postgres
def test_any_bad_line_rolls_back_the_whole_import(engine: Engine, tmp_path: Path) -> None:
    prepare(engine)
    before = snapshot(engine)
    seen: dict[str, int] = {"examples": 0}

    @settings(max_examples=knob("importer_examples", 40, 600), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=hostile_file())
    def run(case: tuple[str, bytes, int]) -> None:
        name, data, bad_lineno = case
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataFormatError) as info:
            import_ratings(engine, path)
        message = str(info.value)
        assert str(path) in message
        if info.value.line is not None and "not in the movies table" not in message:
            assert info.value.line == bad_lineno, (message, bad_lineno)
        assert snapshot(engine) == before, "a failed import changed the database"
        seen["examples"] += 1

    run()
    record("importer", f"import_ratings of a file with one malformed line ({engine.dialect.name})", seen["examples"],
           "DataFormatError naming file and line; database unchanged")


@pytest.mark.parametrize("line", ["1_0\t1\t3\t100", "١\t1\t3\t100", "1\t١\t3\t100", "1\t1\t٣\t100", "1\t1\t3\t1_000"])
def test_only_ascii_digits_are_numbers(tmp_path: Path, line: str) -> None:
    """Python's int()/float() accept '1_0' and Arabic-Indic digits; a MovieLens file never has them, and
    accepting them imports user 10 or movie 1 from a line that is garbage."""
    from movierec.data.movielens import read_ratings

    path = tmp_path / "u.data"
    path.write_text("2\t1\t4\t100\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError):
        list(read_ratings(path, default_time=0))


def write_big(path: Path, rows: int, bad_at_end: bool, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as fh:
        for i in range(rows):
            fh.write(f"{100 + i // 20}\t{1 + i % 20}\t{rng.randint(1, 5)}\t{10_000 + i}\n")
        if bad_at_end:
            fh.write("7\t7\tNaN\t100\n")
    return path


@pytest.mark.postgres
@pytest.mark.parametrize("table", ["holding ratings", "empty"])
def test_bad_row_after_many_blocks_rolls_back_everything(engine: Engine, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, table: str) -> None:
    """Into an empty PostgreSQL table the blocks before the bad row were already COPYed in: rolled back."""
    from movierec.data import movielens, pgload

    monkeypatch.setattr(movielens, "BLOCK_BYTES", 1 << 20)  # several blocks parsed before the bad row
    monkeypatch.setattr(pgload, "BULK_ROWS", 1_000)
    prepare(engine)
    if table == "empty":
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM ratings"))
    before = snapshot(engine)
    rows = 330_000
    path = write_big(tmp_path / "u.data", rows, bad_at_end=True)
    chunks: list[int] = []
    with pytest.raises(DataFormatError, match=rf"u.data:{rows + 1}: rating nan"):
        import_ratings(engine, path, on_bytes=chunks.append)
    assert len(chunks) >= 3, "the bad row was in one of the first blocks"
    assert snapshot(engine) == before and _schema_intact(engine)
    record("importer", f"{rows}-row file with a bad last row, after {len(chunks)} block(s) were parsed "
           f"(table {table}, {engine.dialect.name})", 1, "nothing imported")


CLI_CASES = {
    "latin-1": b"1\t1\t3\t100\n2\t1\t4\t100 caf\xe9\n",
    "utf-16": "1\t1\t3\t100\n".encode("utf-16"),
    "huge id": b"1\t1\t3\t100\n99999999999999999999\t2\t3\t100\n",
    "unknown movie": b"1\t1\t3\t100\n1\t777\t3\t100\n",
    "nan": b"1\t1\t3\t100\n2\t2\tnan\t100\n",
    "negative id": b"-4\t1\t3\t100\n",
}


def test_cli_import_of_bad_files_fails_cleanly(postgres_admin_url: str, tmp_path: Path) -> None:
    with fresh_postgres(postgres_admin_url) as url:
        engine = make_engine(url)
        prepare(engine)
        before = snapshot(engine)
        env = child_env(MOVIEREC_DATABASE_URL=url)
        cases = list(CLI_CASES.items())[: knob("importer_cli_cases", 4, len(CLI_CASES))]
        for name, data in cases:
            path = tmp_path / f"{name.replace(' ', '-')}.data"
            path.write_bytes(data)
            done = subprocess.run([MOVIEREC, "import", "ratings", str(path)], env=env, capture_output=True, text=True,
                                  timeout=120, check=False)
            assert done.returncode == 1, (name, done.returncode, done.stdout, done.stderr)
            errors = [line for line in done.stderr.splitlines() if line.strip()]
            assert len(errors) == 1 and errors[0].startswith("error: ") and str(path) in errors[0], (name, done.stderr)
            assert "Traceback" not in done.stderr
            assert snapshot(engine) == before, name
        engine.dispose()
    record("importer", "`movierec import ratings` of bad files (" + ", ".join(n for n, _ in cases) + ")",
           len(cases), "exit 1, one 'error:' line naming the file, no traceback, database unchanged")


def test_cli_import_sigkilled_midway_is_all_or_nothing(postgres_admin_url: str, tmp_path: Path) -> None:
    rng = random.Random(int(time.time()))
    kills = knob("import_kills", 1, 6)
    rows = knob("import_kill_rows", 150_000, 600_000)
    path = write_big(tmp_path / "u.data", rows, bad_at_end=False)
    outcomes = {"nothing": 0, "everything": 0}
    with fresh_postgres(postgres_admin_url) as url:
        engine = make_engine(url)
        prepare(engine)
        engine.dispose()
        base = len(STORED)
        env = child_env(MOVIEREC_DATABASE_URL=url)
        for _ in range(kills):
            proc = subprocess.Popen([MOVIEREC, "import", "ratings", str(path)], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            # Wait until the import is talking to the database, then kill it a random moment later.
            deadline = time.monotonic() + 120
            while not db_rows(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                   "AND pid <> pg_backend_pid() AND query ~* '^(COPY|INSERT|CREATE TEMP|SELECT)'")[0][0]:
                assert proc.poll() is None and time.monotonic() < deadline, "the import never reached the database"
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 1.5 if rows < 300_000 else 12))  # soak: up to the end of the import
            kill_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
            for _ in range(100):  # the server ends the dead client's session when it notices the socket closed
                others = db_rows(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND pid <> pg_backend_pid()")[0][0]
                if others == 0:
                    break
                time.sleep(0.1)
            count = db_rows(url, "SELECT count(*) FROM ratings")[0][0]
            assert count in (base, base + rows), f"partial import visible after SIGKILL: {count} rows"
            outcomes["nothing" if count == base else "everything"] += 1
            if count != base:  # start the next round from the same state
                engine = make_engine(url)
                prepare(engine)
                engine.dispose()
    record("importer", f"`movierec import ratings` ({rows} rows, PostgreSQL) SIGKILLed at a random moment", kills,
           f"all or nothing: {outcomes['nothing']} left nothing, {outcomes['everything']} had committed")


def test_movie_file_with_a_non_ascii_digit_is_a_format_error(tmp_path: Path) -> None:
    """u.item is Latin-1, where byte 0xB2 is '²': str.isdigit() accepts it, int() does not. A release
    date ending in it must be a DataFormatError (or no year), not a ValueError that escapes the CLI."""
    from movierec.data.fetch import ML100K_GENRES
    from movierec.data.movielens import read_movies

    flags = "|".join(["0"] * (len(ML100K_GENRES) - 1) + ["1"])
    item = tmp_path / "u.item"
    item.write_bytes(f"1|Some Film|01-Jan-199\xb2||http://x|{flags}\n".encode("latin-1"))
    try:
        rows = read_movies(item)
    except DataFormatError:
        return
    assert rows[0].year in (None, 1992)


def _schema_intact(engine: Engine) -> bool:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from movierec.db.schema import Base

    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def _fail_on_slice(monkeypatch: pytest.MonkeyPatch, slice_no: int, fault: Callable[[bytes], bytes]) -> list[int]:
    """Make the COPY's ``slice_no``-th slice go wrong through ``fault`` (earlier ones reach the server)."""
    from movierec.data import pgload

    real, sent = pgload.encode, []

    def encode(*columns: np.ndarray) -> bytes:
        sent.append(len(columns[0]))
        data = real(*columns)
        return fault(data) if len(sent) == slice_no else data

    from movierec.data import movielens

    monkeypatch.setattr(pgload, "encode", encode)
    monkeypatch.setattr(pgload, "COPY_ROWS", 5_000)  # slices of the merge's COPY
    monkeypatch.setattr(movielens, "BLOCK_BYTES", 64 << 10)  # blocks streamed into an empty table
    return sent


def _terminate_copy(url: str) -> Callable[[bytes], bytes]:
    """A fault that kills the importing session's server process in the middle of its COPY."""
    def fault(data: bytes) -> bytes:
        db_exec(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND pid <> pg_backend_pid() AND query ~* '^COPY'")
        time.sleep(0.2)
        return data
    return fault


def _garble(data: bytes) -> bytes:
    return data[:-7]  # a truncated row: the server rejects the stream at this point


@pytest.mark.parametrize("fault", ["garbled row", "connection killed"])
@pytest.mark.parametrize("path", ["empty table", "merge"])
def test_copy_failing_halfway_leaves_the_database_as_it_was(postgres_admin_url: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, fault: str,
                                                           path: str) -> None:
    """Rows already COPYed (and, on the bulk paths, indexes and constraints already dropped) are all
    rolled back when the COPY breaks off: by a stream the server rejects, or by its session dying."""
    from movierec.data import pgload

    monkeypatch.setattr(pgload, "BULK_ROWS", 1_000)  # the bulk variant of either path, at test size
    rows = 40_000
    data = write_big(tmp_path / "u.data", rows, bad_at_end=False)
    with fresh_postgres(postgres_admin_url) as url:
        engine = make_engine(url)
        prepare(engine)
        if path == "empty table":
            db_exec(url, "DELETE FROM ratings")
        else:  # the merge drops the secondary indexes only when the file is at least as large as the table
            db_exec(url, "INSERT INTO ratings SELECT 50000 + g, 1 + g % 20, 3.0, 5 FROM generate_series(1, 2000) g")
        before = snapshot(engine)
        sent = _fail_on_slice(monkeypatch, 4, _garble if fault == "garbled row" else _terminate_copy(url))
        with pytest.raises((DatabaseError, SQLAlchemyError)) as info:
            import_ratings(engine, data)
        assert len(sent) >= 4, f"the COPY stopped before the fault ({len(sent)} slices): {info.value}"
        engine.dispose()
        engine = make_engine(url)
        assert snapshot(engine) == before
        assert _schema_intact(engine)
        monkeypatch.undo()
        result = import_ratings(engine, data)  # and the same import then goes through
        assert result.ratings_inserted == rows and _schema_intact(engine)
        engine.dispose()
    record("importer", f"COPY of {rows} rows broken off after 3 of {len(sent)}+ slices ({fault}, {path}, PostgreSQL)",
           1, "database and schema as before; the retry imports everything")


def test_cli_import_whose_copy_is_killed_fails_cleanly(postgres_admin_url: str, tmp_path: Path) -> None:
    """The server process of a `movierec import` dies in the middle of its COPY (into an empty table, the
    streaming path): one `error:` line naming the database, exit 1, no traceback, nothing imported."""
    rows = knob("import_copy_kill_rows", 700_000, 2_000_000)  # > 500 000: the bulk path streams into ratings
    path = write_big(tmp_path / "u.data", rows, bad_at_end=False)
    with fresh_postgres(postgres_admin_url) as url:
        engine = make_engine(url)
        prepare(engine)
        db_exec(url, "DELETE FROM ratings")
        proc = subprocess.Popen([MOVIEREC, "import", "ratings", str(path)], env=child_env(MOVIEREC_DATABASE_URL=url),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 120
        killed = []
        while not killed:
            assert proc.poll() is None and time.monotonic() < deadline, "the import never reached its COPY"
            killed = db_rows(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                  "datname = current_database() AND pid <> pg_backend_pid() AND query ~* '^COPY'")
            time.sleep(0.02)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, (proc.returncode, out, err)
        errors = [line for line in err.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: database "), err
        assert "Traceback" not in err
        assert snapshot(engine) == [] and _schema_intact(engine)
        engine.dispose()
    record("importer", f"`movierec import ratings` ({rows} rows, empty table) with its COPY's server process killed",
           1, "exit 1, one 'error: database ...' line, nothing imported, schema intact")
