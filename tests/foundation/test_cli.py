"""The `movierec` command for the foundation steps, run as a user runs it (a real process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import movierec


def movierec_cmd(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # The console script of the active environment; fall back to the module for odd layouts.
    script = Path(sys.executable).with_name("movierec")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from cli import main; main()"]
    return subprocess.run(command + list(args), env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, ml100k_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")}
    env.update(MOVIEREC_DATABASE_URL=db_url, MOVIEREC_MODEL_STORE=str(tmp_path / "models"),
               MOVIEREC_DATA_DIR=str(ml100k_dir.parent), MOVIEREC_LOG_LEVEL="WARNING")
    return env


def test_upgrade_fetch_import_twice(cli_env: dict[str, str], tmp_path: Path, ml100k_dir: Path) -> None:
    assert movierec_cmd("db", "upgrade", env=cli_env, cwd=tmp_path).returncode == 0
    fetched = movierec_cmd("data", "fetch", "ml-100k", env=cli_env, cwd=tmp_path)
    assert fetched.returncode == 0 and "already" in fetched.stdout
    first = movierec_cmd("import", "movielens", str(ml100k_dir), env=cli_env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "1682 new" in first.stdout and "100000 new" in first.stdout
    second = movierec_cmd("import", "movielens", str(ml100k_dir), env=cli_env, cwd=tmp_path)
    assert "0 new, 0 updated, 100000 unchanged" in second.stdout
    stats = movierec_cmd("db", "stats", env=cli_env, cwd=tmp_path)
    assert '"ratings": 100000' in stats.stdout and '"movies": 1682' in stats.stdout
    skipped = movierec_cmd("import", "movielens", str(ml100k_dir), "--if-empty", env=cli_env, cwd=tmp_path)
    assert "nothing imported" in skipped.stdout


def test_bad_ratings_file_exits_nonzero_names_line_and_changes_nothing(
    cli_env: dict[str, str], tmp_path: Path, ml100k_dir: Path
) -> None:
    movierec_cmd("import", "movielens", str(ml100k_dir), env=cli_env, cwd=tmp_path)
    bad = tmp_path / "ratings.csv"
    bad.write_text("userId,movieId,rating,timestamp\n5000,1,4.0,1\n5000,2,7.0,1\n")
    result = movierec_cmd("import", "ratings", str(bad), env=cli_env, cwd=tmp_path)
    assert result.returncode != 0
    assert f"{bad}:3: rating 7.0" in result.stderr and "nothing was imported" in result.stderr
    assert "Traceback" not in result.stderr
    stats = movierec_cmd("db", "stats", env=cli_env, cwd=tmp_path)
    assert '"ratings": 100000' in stats.stdout


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")}
    env["MOVIEREC_DATABASE_URL"] = "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"
    result = movierec_cmd("db", "upgrade", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "error: database postgresql+psycopg://nobody:***@127.0.0.1:1/none" in result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr


def test_unknown_data_set_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")}
    env["MOVIEREC_DATA_DIR"] = str(tmp_path)
    result = movierec_cmd("data", "fetch", "ml-9z", env=env, cwd=tmp_path)
    assert result.returncode == 1 and "unknown data set 'ml-9z'" in result.stderr


def test_version_flag(tmp_path: Path) -> None:
    result = movierec_cmd("--version", env=dict(os.environ), cwd=tmp_path)
    assert result.stdout.strip() == movierec.__version__
