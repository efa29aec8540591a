"""The HTTP server protocol: uvicorn's fast httptools parser with a bound on request-header bytes.

httptools buffers a request's headers without limit, so one connection could make the server hold
megabytes (MOVIEREC_MAX_BODY_BYTES only bounds bodies). uvicorn takes the protocol class as a
setting; this one counts the bytes received while a request's headers are incomplete and answers
431 and closes the connection past the limit.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Most bytes a request may send before its headers are complete. Generous (browsers send a few
#: KB); the count may include the first read of the body, which asyncio caps at 256 KiB.
MAX_HEADER_BYTES = 1 << 20

_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
              b"content-length: 51\r\nconnection: close\r\n\r\n"
              b'{"detail": "request headers larger than 1048576 B"}')


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses requests whose headers exceed MAX_HEADER_BYTES."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._in_headers = True
        self._header_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self.transport.write(_TOO_LARGE)
                self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_headers, self._header_bytes = True, 0
