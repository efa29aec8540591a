"""``make smoke``: ``python -m tests.deploy.compose_replay [--compose-file ...] [--keep]``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __doc__ as PACKAGE_DOC
from .common import DEFAULT_ADMIN_URL, REPO, SmokeError
from .run import smoke


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.deploy.compose_replay",
                                     description=PACKAGE_DOC.split("\n\n")[0],
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
