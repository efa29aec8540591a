"""The compose services as local processes: translated from containers, started in order, supervised."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .commands import check_movierec_command, movierec_invocations
from .common import BIN, PASS_THROUGH, SmokeError, log
from .compose import parse_duration, unescape
from .dockerfile import ImageConfig


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


class Stack:
    """The compose services of one smoke run, their processes and their states."""

    def __init__(self, model: dict[str, Any], image: ImageConfig | dict[str | None, ImageConfig], root: Path,
                 db_url: Any) -> None:
        """``image``: what the image gives a container, or that per build target (None: the default)."""
        self.model = model
        self.images = image if isinstance(image, dict) else {None: image}
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
        image = self.images.get((cfg.get("build") or {}).get("target"), self.images.get(None, ImageConfig()))
        env: dict[str, str] = {k: v for k, v in image.env.items() if k != "PATH"}
        for key, value in (cfg.get("environment") or {}).items():
            if value is not None:  # `KEY:` with nothing set in the caller's environment: unset
                env[key] = unescape(str(value))
        for key, value in list(env.items()):
            if value.startswith("/"):
                env[key] = str(self.host_path(svc, value))
            else:
                env[key] = self._rewrite_url(value)
        workdir = cfg.get("working_dir") or image.workdir
        svc.cwd = self.host_path(svc, workdir)
        # In this image the runtime user's home is its WORKDIR.
        base = {"PATH": f"{BIN}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(svc.cwd), "LANG": "C.UTF-8"}
        base.update({k: os.environ[k] for k in PASS_THROUGH if k in os.environ})
        svc.env = {**base, **env}
        entrypoint = cfg.get("entrypoint") if cfg.get("entrypoint") is not None else image.entrypoint
        command = cfg.get("command") if cfg.get("command") is not None else image.cmd
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
