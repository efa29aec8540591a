"""Request limits checked before a body is validated item by item.

``MOVIEREC_MAX_BATCH`` bounds the items of one POST /predict or POST /ratings. Checked after the
validation, as it was, a 1 MB body of ``[1,1,...]`` was first validated into 500 000 errors
(seconds of work on the event loop); checked here, on the parsed JSON, it costs a ``len()``.
"""

from __future__ import annotations

import email.message

from fastapi import Request
from fastapi.exceptions import RequestValidationError


def _is_json(request: Request) -> bool:
    """Whether FastAPI parsed this body as JSON (no Content-Type, or ``application/*json``)."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


async def enforce_batch_limit(request: Request) -> None:
    """422 for a JSON list body longer than ``MOVIEREC_MAX_BATCH``, before any item is validated.

    A route dependency: FastAPI parses the body before it solves dependencies, and
    ``request.json()`` returns that parsed body (Starlette caches it), so nothing is parsed twice.
    """
    if not _is_json(request) or not await request.body():
        return
    try:
        body = await request.json()
    except ValueError:
        return  # FastAPI has already answered a body that is not JSON
    limit = request.app.state.settings.max_batch
    if isinstance(body, list) and len(body) > limit:
        raise RequestValidationError([{
            "type": "too_long", "loc": ("body",), "input": None,
            "msg": f"at most {limit} items per request (MOVIEREC_MAX_BATCH), got {len(body)}",
            "ctx": {"max_length": limit, "actual_length": len(body)},
        }])
