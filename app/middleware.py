"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a stream copy per request)."""

from __future__ import annotations

import json
import time

from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics


class BodyRefused(HTTPException):
    """Raised from ``receive`` when a streamed body is refused before it was read in full.

    An HTTPException so that FastAPI's body reader re-raises it unchanged (it turns any other
    exception into a 400) and the exception handlers answer it.
    """


class BodyTooLarge(BodyRefused):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class TooManyJSONValues(BodyRefused):
    def __init__(self, limit: int) -> None:
        super().__init__(422, [{"type": "too_long", "loc": ["body"], "ctx": {"max_values": limit},
                                "msg": f"the body holds more than {limit} JSON values (MOVIEREC_MAX_BATCH items)"}])


#: JSON values one batch item may use (``{"user_id": 1, "movie_id": 2, "rating": 4.5, "rated_at": 1}``
#: has 8 separators; twice that leaves room), and a few for the enclosing list.
JSON_VALUES_PER_ITEM = 16


def json_value_budget(max_batch: int) -> int:
    """How many JSON separators (``,`` ``:`` ``[`` ``{``) and escapes a body may hold: enough for
    ``max_batch`` items."""
    return max_batch * JSON_VALUES_PER_ITEM + 64


async def _send_json(send: Send, status: int, detail: object) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimitMiddleware:
    """Limits on request bodies, applied while they stream in, before anything parses them.

    * 413 for bodies over ``max_bytes``: from Content-Length up front, and counted while streaming
      (chunked requests carry no length, and a client may lie about it);
    * 422 for bodies with more than ``max_json_values`` JSON separators. Parsing 1 MB of JSON takes
      30-60 ms of the event loop whatever comes after it; every body this API takes is at most
      MOVIEREC_MAX_BATCH small objects, so a body with far more values is refused unparsed, after
      a byte count per chunk (``bytes.translate``, C speed). Separators inside strings count too, and
      so do backslashes (string escapes), which can only refuse bodies no schema here accepts (no
      field is a string).

    Also 422 for a NUL in the URL, the one other request check that must happen before any route runs.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_json_values: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_values = max_json_values

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # No text column can hold NUL (PostgreSQL refuses it outright): say so instead of letting
        # it surface as a database error.
        if b"%00" in scope.get("query_string", b"") or "\x00" in scope.get("path", ""):
            # In the shape of FastAPI's validation errors, which is what 422 documents.
            await _send_json(send, 422, [{"loc": ["query"], "msg": "NUL characters are not allowed in the URL",
                                          "type": "value_error"}])
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _send_json(send, 400, "invalid Content-Length header")
                    return
                if length > self.max_bytes:
                    await _send_json(send, 413, f"request body larger than {self.max_bytes} bytes")
                    return
                break

        limit, max_values = self.max_bytes, self.max_json_values
        received = values = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received, values
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise BodyTooLarge(limit)
                if max_values is not None and chunk:
                    values += len(chunk) - len(chunk.translate(None, _SEPARATORS))
                    if values > max_values:
                        raise TooManyJSONValues(max_values)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyRefused as exc:
            if started:
                raise
            await _send_json(send, exc.status_code, exc.detail)


#: What counts against the budget: JSON separators, and backslashes (each escape in a string costs
#: the parser about as much as a value; no body of this API needs one).
_SEPARATORS = b",:[{\\"

#: Every response: no MIME sniffing, no referrer to other sites, never framed by another page.
_COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                   (b"x-frame-options", b"DENY")]
#: HTML pages (the front end, /docs): scripts, styles, images and API calls from this origin only;
#: no inline script, no plugins, no <base>, forms post here, never framed (clickjacking).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: Everything else (JSON, images, scripts as files): nothing may run or load in their context.
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'"


class SecurityHeadersMiddleware:
    """Browser security headers on every response (a route's own headers win)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                html = any(name.lower() == b"content-type" and value.startswith(b"text/html")
                           for name, value in headers)
                extra = [*_COMMON_HEADERS, (b"content-security-policy", (PAGE_CSP if html else OTHER_CSP).encode())]
                headers.extend(item for item in extra if item[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class MetricsMiddleware:
    """Counts requests and records latency per route *template* (``/movies/{movie_id}``), so ids
    in paths do not explode the label set. Unmatched paths share one label."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path, root_path = scope["path"], scope.get("root_path", "")  # a Mount rewrites them
        try:
            await self.app(scope, receive, status_send)
        finally:
            self.metrics.observe_request(scope["method"], _route_label(scope, path, root_path, status), status,
                                         time.perf_counter() - start)


def _route_label(scope: Scope, path: str, root_path: str, status: int) -> str:
    """The route template of a request: API routes set ``scope["route"]``; the others (the docs,
    Swagger UI's files, the front end's pages) are found by matching the app's routes."""
    template = getattr(scope.get("route"), "path", None)
    if template:
        return template
    router = scope.get("router")
    scope = {**scope, "path": path, "root_path": root_path}
    # FastAPI keeps its frontend routes apart from ``routes``, tried after them.
    routes = [*getattr(router, "routes", ()), *getattr(router, "_low_priority_routes", ())]
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            template = getattr(route, "path", None)
            if template:  # /docs, or a Mount such as /docs/assets
                return template if isinstance(route, Route) else template.rstrip("/") + "/{path}"
            # FastAPI's frontend routes (the static pages): a miss there is an unknown path.
            return "unmatched" if status == 404 else "static"
    return "unmatched"
