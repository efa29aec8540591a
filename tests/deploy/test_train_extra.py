"""torch, numba and matplotlib are the `train` extra: the API image leaves them out, so everything
but `movierec train` must run without them, and `movierec train` must say what to install."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from .conftest import REPO

TRAINING = ("torch", "numba", "matplotlib")
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
#: Runs the `movierec` console script as if the training packages were not installed: a None in
#: sys.modules makes both `import torch` and importlib's find_spec("torch") see no package.
WITHOUT_EXTRA = (
    "import sys\n"
    f"for name in {TRAINING!r}:\n"
    "    sys.modules[name] = None\n"
    "from importlib.metadata import entry_points\n"
    "main = entry_points(group='console_scripts')['movierec'].load()\n"
    "sys.argv = ['movierec', *sys.argv[1:]]\n"
    "sys.exit(main())\n"
)


def movierec_without_extra(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "MOVIEREC_MODEL_STORE": str(tmp_path / "m"),
           "MOVIEREC_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "MOVIEREC_DATA_DIR": str(tmp_path / "d")}
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRA, *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env)


def test_training_packages_are_the_train_extra_only() -> None:
    def names(requirements: list[str]) -> set[str]:
        return {r.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()
                for r in requirements}

    assert not names(PROJECT["dependencies"]) & set(TRAINING)
    assert names(PROJECT["optional-dependencies"]["train"]) == set(TRAINING)
    makefile = (REPO / "Makefile").read_text()
    assert '-e ".[train,test]"' in makefile, "make install (and so make run/test) installs the extra"


def test_train_without_the_extra_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    proc = movierec_without_extra("train", tmp_path=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "pip install 'movierec[train]'" in lines[0]
    assert "missing: torch, numba, matplotlib" in lines[0]
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir()), "nothing written to the store"


def test_everything_else_runs_without_the_extra(tmp_path: Path) -> None:
    for args in (["db", "upgrade"], ["models", "list"], ["serve", "--help"], ["train", "--help"]):
        proc = movierec_without_extra(*args, tmp_path=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
    code = ("import sys\n" + "".join(f"sys.modules[{n!r}] = None\n" for n in TRAINING)
            + "from app.main import create_app\nfrom movierec.settings import Settings\n"
            + f"create_app(Settings(database_url='sqlite:///{tmp_path / 'db.sqlite'}', model_store='{tmp_path / 'm'}'))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
