"""The HTTP server protocol: uvicorn's fast httptools parser, hardened against slow and greedy clients.

uvicorn bounds neither the bytes of a request's headers nor the time a client takes to send them
or its body: httptools buffers headers without limit (one connection could make the server hold
megabytes; MOVIEREC_MAX_BODY_BYTES only bounds bodies), a connection that sends nothing, or one
header line every few seconds, stays open for ever, and so does one that promised a body and
trickles it. uvicorn takes the protocol class as a setting; this one adds

* a bound on header bytes (431) and on the URL's length (414), each closing the connection;
* ``MOVIEREC_HEADER_TIMEOUT``: from the connection's opening, or a request's first byte, to the
  end of its headers (408 and close; a connection that sent nothing is just closed);
* ``MOVIEREC_BODY_TIMEOUT``: from the end of the headers to the end of the body (408 and close,
  or just close once a response has started).

``MOVIEREC_KEEP_ALIVE_TIMEOUT`` (idle time between requests) and ``MOVIEREC_LIMIT_CONCURRENCY``
are uvicorn's own settings, passed by ``movierec serve``.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from movierec.settings import get_settings

#: Most bytes a request may send before its headers are complete. Generous (browsers send a few
#: KB); the count may include the first read of the body, which asyncio caps at 256 KiB.
MAX_HEADER_BYTES = 1 << 20
#: Longest request target (path and query). Browsers and proxies stop at 8-64 KiB; the longest
#: URL of this API (an ``exclude`` list of a thousand ids) is under 12 KiB.
MAX_URL_BYTES = 32 * 1024


def _response(status: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


_TOO_LARGE = _response("431 Request Header Fields Too Large", f"request headers larger than {MAX_HEADER_BYTES} B")
_URL_TOO_LONG = _response("414 URI Too Long", f"request target longer than {MAX_URL_BYTES} B")
_HEADER_TIMEOUT = _response("408 Request Timeout", "the request's headers took too long")
_BODY_TIMEOUT = _response("408 Request Timeout", "the request's body took too long")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header/URL size limits and header/body read timeouts."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        settings = get_settings()  # read in each worker process (the class is passed by reference)
        self.header_timeout = settings.header_timeout
        self.body_timeout = settings.body_timeout
        self._in_headers = True
        self._header_bytes = 0
        self._url_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False  # answered and closing: the parser's remaining callbacks are ignored

    # -- timers ------------------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: object) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)  # type: ignore[arg-type]

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, response: bytes | None) -> None:
        """Answer ``response`` (unless one has started) and close the connection."""
        self._disarm()
        self._refused = True
        if self.transport is None or self.transport.is_closing():
            return
        started = self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
        if response is not None and not started:
            self.transport.write(response)
        self.transport.close()

    def _header_timed_out(self) -> None:
        # A connection that never sent a byte (an idle pre-connect, or a keep-alive one between
        # requests that uvicorn did not close yet) is closed without an answer.
        self._refuse(_HEADER_TIMEOUT if self._header_bytes else None)

    def _body_timed_out(self) -> None:
        self._refuse(_BODY_TIMEOUT)

    # -- protocol ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, self._header_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_headers:
            if self._deadline is None:  # first bytes of a request on a kept-alive connection
                self._arm(self.header_timeout, self._header_timed_out)
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse(_TOO_LARGE)
                return
        super().data_received(data)

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > MAX_URL_BYTES:
            self._refuse(_URL_TOO_LONG)
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_headers = False
        self._arm(self.body_timeout, self._body_timed_out)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        super().on_message_complete()
        self._in_headers, self._header_bytes, self._url_bytes = True, 0, 0
