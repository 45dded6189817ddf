"""uvicorn's httptools protocol with a deadline for a request's headers.

Why: uvicorn (0.54) times out idle keep-alive connections but not a connection that opens and
then sends its headers slowly or never: 500 such sockets sat for as long as their clients
liked. Here every request's headers must be complete within ``header_read_timeout_s`` of the
connection opening (or of the request's first byte on a kept-alive connection); otherwise the
client gets a bare 408 and the socket is closed. Bodies have their own deadline, enforced
where they are read (``gateway.entrypoints.engine.body``).
"""

from __future__ import annotations

import asyncio
import os
from asyncio import TimerHandle

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TIMEOUT_ENV = "TIERWISE_HEADER_READ_TIMEOUT_S"  # worker processes (gateway.workers)
_TIMEOUT_BODY = b"The request headers were not received in time."
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                     b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\nconnection: close\r\n\r\n"
                     + _TIMEOUT_BODY)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """httptools with a header deadline of ``timeout_s`` (module level, so that uvicorn can hand
    it to worker processes by reference; a worker reads its deadline from the environment)."""

    timeout_s: float = float(os.environ.get(TIMEOUT_ENV, "10"))
    _header_timer: TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # a kept-alive connection's next request
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()


def header_timeout_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class to pass as ``uvicorn.run(http=...)`` in a single process."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"timeout_s": timeout_s})
