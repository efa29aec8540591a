"""scripts/docker/requirements.py: the one reader of what the images install (stack.py's wheelhouse
stamp and wheelhouse.sh's download lists)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "docker" / "requirements.py"

spec = importlib.util.spec_from_file_location("image_requirements", SCRIPT)
assert spec and spec.loader
requirements = importlib.util.module_from_spec(spec)
spec.loader.exec_module(requirements)


def _pyproject(tmp_path: Path, deps: list[str], train: list[str]) -> Path:
    path = tmp_path / "pyproject.toml"
    quoted = lambda items: ", ".join(f'"{i}"' for i in items)  # noqa: E731
    path.write_text(f'[build-system]\nrequires = ["setuptools>=68"]\n[project]\nname = "x"\n'
                    f'dependencies = [{quoted(deps)}]\n[project.optional-dependencies]\ntrain = [{quoted(train)}]\n')
    return path


def test_lists_split_torch_from_the_rest(tmp_path: Path) -> None:
    pyproject = _pyproject(tmp_path, ["fastapi>=0.110", "numpy"], ["torch==2.13.0", "numba"])
    out = tmp_path / "out"
    out.mkdir()
    requirements.write_lists(out, pyproject)
    assert (out / "torch.txt").read_text() == "torch==2.13.0\n"
    assert (out / "torch-version").read_text() == "2.13.0"
    assert (out / "requirements.txt").read_text().split() == ["fastapi>=0.110", "numpy", "numba", "setuptools>=68"]


def test_digest_changes_with_a_dependency_and_not_with_order(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    one = requirements.digest(_pyproject(tmp_path / "a", ["fastapi", "numpy"], ["torch==2.13.0"]))
    same = requirements.digest(_pyproject(tmp_path / "b", ["numpy", "fastapi"], ["torch==2.13.0"]))
    added = requirements.digest(_pyproject(tmp_path / "c", ["numpy", "fastapi", "faiss-cpu"], ["torch==2.13.0"]))
    assert one == same != added


def test_unpinned_torch_is_refused(tmp_path: Path) -> None:
    pyproject = _pyproject(tmp_path, ["numpy"], ["torch>=2"])
    out = tmp_path / "out"
    out.mkdir()
    try:
        requirements.write_lists(out, pyproject)
    except SystemExit as exc:
        assert "pin torch with ==" in str(exc)
    else:
        raise AssertionError("an unpinned torch was accepted")


def test_the_script_reads_this_repository(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], check=True, cwd=tmp_path)
    assert (tmp_path / "torch.txt").read_text().startswith("torch==")
    assert "fastapi" in (tmp_path / "requirements.txt").read_text()
