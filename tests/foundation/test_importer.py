"""Importing MovieLens into SQLite and PostgreSQL: complete, idempotent, all-or-nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select, text

from movierec.data.importer import import_movielens, import_ratings
from movierec.data.movielens import DataFormatError, read_ratings, split_title
from movierec.db.schema import Movie, Rating


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(Movie)).scalar_one(),
                conn.execute(select(func.count()).select_from(Rating)).scalar_one())


def snapshot(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(text("SELECT user_id, movie_id, rating, rated_at FROM ratings ORDER BY 1, 2")).all()


def test_ml100k_imports_completely_and_twice_changes_nothing(engine: Engine, ml100k_dir: Path) -> None:
    first = import_movielens(engine, ml100k_dir)
    assert (first.movies_inserted, first.ratings_inserted) == (1682, 100_000)
    assert counts(engine) == (1682, 100_000)
    with engine.connect() as conn:
        toy = conn.execute(select(Movie.title, Movie.year, Movie.genres).where(Movie.id == 1)).one()
        assert tuple(toy) == ("Toy Story", 1995, "Animation|Children's|Comedy")
        users = conn.execute(select(func.count(func.distinct(Rating.user_id)))).scalar_one()
        assert users == 943
    before = snapshot(engine)
    second = import_movielens(engine, ml100k_dir)
    assert (second.movies_inserted, second.movies_updated) == (0, 0)
    assert (second.ratings_inserted, second.ratings_updated, second.ratings_unchanged) == (0, 0, 100_000)
    assert snapshot(engine) == before


def write_csv_set(directory: Path, ratings: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n2,"City of Lost Children, The (Cité des '
        'enfants perdus, La) (1995)",Drama|Sci-Fi\n3,Untitled,(no genres listed)\n',
        encoding="utf-8",
    )
    (directory / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + ratings, encoding="utf-8")
    return directory


def test_csv_layout_with_half_stars(engine: Engine, tmp_path: Path) -> None:
    d = write_csv_set(tmp_path / "set", "1,1,4.5,100\n1,2,0.5,101\n2,3,3.0,102\n")
    result = import_movielens(engine, d)
    assert (result.movies_inserted, result.ratings_inserted) == (3, 3)
    with engine.connect() as conn:
        title, year = conn.execute(select(Movie.title, Movie.year).where(Movie.id == 2)).one()
        assert title.startswith("City of Lost Children, The (Cité") and year == 1995
        assert conn.execute(select(Movie.genres).where(Movie.id == 3)).scalar_one() == ""
        assert conn.execute(select(Rating.rating).where(Rating.movie_id == 1)).scalar_one() == 4.5


def test_ml1m_dat_layout(engine: Engine, tmp_path: Path) -> None:
    d = tmp_path / "ml-1m"
    d.mkdir()
    (d / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Comedy\n2::Café (1990)::Drama\n".encode("latin-1"))
    (d / "ratings.dat").write_text("1::1::5::978300760\n1::2::3::978302109\n")
    import_movielens(engine, d)
    assert counts(engine) == (2, 2)
    with engine.connect() as conn:
        assert conn.execute(select(Movie.title).where(Movie.id == 2)).scalar_one() == "Café"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("7\t1\t5.5\t1", "rating 5.5"),
        ("7\t1\tfour\t1", "not numbers"),
        ("7\t1", "expected 3 or 4 fields"),
        ("-7\t1\t4\t1", "user id -7"),
        ("7\t999\t4\t1", "movie id 999 is not in the movies table"),
        ("7\t1\tnan\t1", "rating nan"),
        ("7\t1\t4\t99999999999999999999", "out of range"),
        ("7\t1\t4\t9999999999999999", "timestamp 9999999999999999"),
    ],
)
def test_bad_line_names_file_and_line_and_writes_nothing(engine: Engine, tmp_path: Path, line: str,
                                                          problem: str) -> None:
    d = write_csv_set(tmp_path / "set", "1,1,4.0,100\n")
    import_movielens(engine, d)
    before = snapshot(engine)
    bad = tmp_path / "u.data"
    good = "".join(f"{u}\t1\t3\t{u}\n" for u in range(10, 60))
    bad.write_text(good + line + "\n" + good.replace("\t1\t3", "\t2\t3"))
    with pytest.raises(DataFormatError) as info:
        import_ratings(engine, bad)
    assert f"{bad}:51:" in str(info.value)
    assert problem in str(info.value)
    assert snapshot(engine) == before


def test_ratings_into_an_empty_catalogue_say_to_import_movies_first(engine: Engine, tmp_path: Path) -> None:
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,1,4.0,1\n")
    with pytest.raises(DataFormatError, match=r"ratings.csv:2: movie id 1 is not in the movies table"):
        import_ratings(engine, ratings)
    assert counts(engine) == (0, 0)


def test_bad_movie_file_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    d = write_csv_set(tmp_path / "set", "1,1,4.0,100\n")
    (d / "movies.csv").write_text("movieId,title,genres\n1,A (1999),Drama\nx,B,Drama\n")
    with pytest.raises(DataFormatError, match=r"movies.csv:3: movie id 'x'"):
        import_movielens(engine, d)
    assert counts(engine) == (0, 0)


def test_newer_rerating_updates_and_older_file_does_not_clobber(engine: Engine, tmp_path: Path) -> None:
    d = write_csv_set(tmp_path / "set", "1,1,4.0,100\n")
    import_movielens(engine, d)
    newer = tmp_path / "newer.csv"
    newer.write_text("userId,movieId,rating,timestamp\n1,1,2.5,200\n")
    assert import_ratings(engine, newer).ratings_updated == 1
    older = tmp_path / "older.csv"
    older.write_text("userId,movieId,rating,timestamp\n1,1,5.0,150\n")
    result = import_ratings(engine, older)
    assert (result.ratings_inserted, result.ratings_updated) == (0, 0)
    assert snapshot(engine) == [(1, 1, 2.5, 200)]


def test_same_pair_twice_in_one_file_keeps_the_latest(engine: Engine, tmp_path: Path) -> None:
    d = write_csv_set(tmp_path / "set", "1,1,1.0,300\n1,1,4.0,100\n1,2,2.0,100\n1,2,3.0,100\n")
    import_movielens(engine, d)
    assert snapshot(engine) == [(1, 1, 1.0, 300), (1, 2, 3.0, 100)]


def test_missing_directory_and_file_are_clear_errors(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no such directory"):
        import_movielens(engine, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="not a MovieLens directory"):
        import_movielens(engine, tmp_path / "empty")
    with pytest.raises(DataFormatError, match="no such file"):
        import_ratings(engine, tmp_path / "nope.csv")


def test_split_title() -> None:
    assert split_title("Toy Story (1995)") == ("Toy Story", 1995)
    assert split_title("Babylon 5 (1994) ") == ("Babylon 5", 1994)
    assert split_title("Cosmos (1980-1981)") == ("Cosmos", 1980)
    assert split_title("Hyena Road") == ("Hyena Road", None)


junk_line = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(junk_line, st.tuples(st.integers(-5, 2**40), st.integers(-5, 2**40),
                                                          st.floats(allow_nan=True), st.integers(-2**63, 2**63))
                                 .map(lambda t: "\t".join(map(str, t)))), min_size=1, max_size=20))
def test_parser_accepts_only_valid_rows_or_names_the_line(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "u.data"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        rows = [chunk for chunk in read_ratings(path, default_time=0)]
    except DataFormatError as exc:
        assert str(path) in str(exc)
        return
    for chunk in rows:
        assert ((chunk.rating >= 0.5) & (chunk.rating <= 5) & (chunk.rating * 2 % 1 == 0)).all()
        assert (chunk.user_id > 0).all() and (chunk.movie_id > 0).all() and (chunk.rated_at >= 0).all()


def schema_matches(engine: Engine) -> bool:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from movierec.db.schema import Base

    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_postgres_bulk_paths_restore_indexes_and_foreign_key(postgres_url: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from movierec.data import pgload
    from movierec.db.engine import make_engine

    monkeypatch.setattr(pgload, "BULK_ROWS", 2)
    engine = make_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM ratings"))
            conn.execute(text("DELETE FROM movies"))
        d = write_csv_set(tmp_path / "set", "1,1,4.0,100\n2,1,3.0,100\n3,2,5.0,100\n")
        # The empty-table path fails after its COPY, while rebuilding: the table stays empty, the schema whole.
        real_restore = pgload._restore_secondary
        monkeypatch.setattr(pgload, "_restore_secondary", lambda conn: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError, match="boom"):
            import_movielens(engine, d)
        assert counts(engine) == (0, 0) and schema_matches(engine)
        monkeypatch.setattr(pgload, "_restore_secondary", real_restore)
        # Empty table, a file rating pairs twice: streamed in, found out, loaded again from the resolved rows.
        d2 = write_csv_set(tmp_path / "dups", "1,1,1.0,300\n1,1,4.0,100\n1,2,2.0,100\n1,2,3.0,100\n")
        result = import_movielens(engine, d2)
        assert (result.ratings_read, result.ratings_inserted) == (4, 2)
        assert snapshot(engine) == [(1, 1, 1.0, 300), (1, 2, 3.0, 100)] and schema_matches(engine)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM ratings"))
        assert import_movielens(engine, d).ratings_inserted == 3  # empty table: COPY straight in
        assert schema_matches(engine)
        with engine.connect() as conn:  # the primary key is back and enforced
            with pytest.raises(Exception, match="pk_ratings"):
                conn.execute(text("INSERT INTO ratings VALUES (1, 1, 4.0, 100)"))
        # The merge path, as large as the table: a failure after the indexes were dropped rolls the drop back too.
        bad = tmp_path / "bad.csv"
        bad.write_text("userId,movieId,rating,timestamp\n" + "".join(f"{u},1,4.0,1\n" for u in range(10, 20)))
        monkeypatch.setattr(pgload, "_restore_secondary", lambda conn: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError, match="boom"):
            import_ratings(engine, bad)
        assert schema_matches(engine)
        assert snapshot(engine) == [(1, 1, 4.0, 100), (2, 1, 3.0, 100), (3, 2, 5.0, 100)]
        monkeypatch.setattr(pgload, "_restore_secondary", real_restore)
        result = import_ratings(engine, bad)
        assert (result.ratings_inserted, result.ratings_updated) == (10, 0) and schema_matches(engine)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM ratings"))
            conn.execute(text("DELETE FROM movies"))
        engine.dispose()
