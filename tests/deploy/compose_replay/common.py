"""What every part of the compose replay shares: where things are, its error, its log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: The directory of the running interpreter: the venv's ``movierec`` and ``python`` live here.
BIN = Path(sys.executable).parent
#: Environment variables a local process inherits from the caller (network and TLS set-up).
PASS_THROUGH = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
                "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL", "TZ")


class SmokeError(RuntimeError):
    """The stack did not come up as compose would bring it up; the message says where."""


def log(message: str) -> None:
    print(f"[smoke {time.monotonic() - _T0:7.1f}s] {message}", flush=True)


_T0 = time.monotonic()
