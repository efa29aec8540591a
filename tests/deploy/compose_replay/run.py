"""One replay: a fresh database, the stack brought up in order, then /ready, /recommend and POST /ratings."""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import SmokeError, log
from .compose import compose_command, load_compose
from .dockerfile import ImageConfig, read_image_config
from .stack import Stack


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
    # What each build target of the services' images gives a container (the proxy is not run).
    image: dict[str | None, ImageConfig] = {}
    for service in model["services"].values():
        build = service.get("build")
        if build and "PROXY_IMAGE" not in (build.get("args") or {}):
            dockerfile = Path(build["context"]) / (build.get("dockerfile") or "Dockerfile")
            image.setdefault(build.get("target"), read_image_config(dockerfile, build.get("target")))
    if not image:
        image[None] = read_image_config(compose_file.parent / "Dockerfile")
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
