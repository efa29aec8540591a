"""Write protection: POST and DELETE need ``X-API-Key`` when ``MOVIEREC_API_KEY`` is set."""

from __future__ import annotations

import secrets

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Required on POST/DELETE when the server has an API key.")


async def require_api_key(request: Request, key: str | None = Security(api_key_header)) -> None:
    """401 unless no key is configured or the header matches it (constant-time comparison)."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if key is None or not secrets.compare_digest(key.encode("utf-8"), expected.get_secret_value().encode("utf-8")):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or invalid X-API-Key header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
