"""uvicorn's HTTP/1.1 protocol with a deadline on request heads (slowloris), for both HTTP services.

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but a connection that sends its
request head one byte at a time has no deadline at all: a few hundred of them hold as many sockets and
file descriptors for as long as the attacker likes. This protocol closes a connection whose next request
head has not arrived within `head_timeout_s` of the connection opening or of the previous answer. Slow
*bodies* are the applications' own deadline (`PULSESEAL_*_BODY_TIMEOUT_S`).

The parser is httptools (C) rather than h11 (pure Python): under a junk-request flood the HTTP parsing and
serialising was most of what a refusal cost the key service, and that CPU is taken from the legitimate
callers' requests (docs/threat-model.md, the flood). h11 refused a request head over 16 KiB; httptools has
no limit of its own (a 20 MB header was read whole), so this protocol keeps that limit: a head still
incomplete after `MAX_HEAD_BYTES` is answered 431 and the connection closed, before the application sees it.
"""

from __future__ import annotations

import asyncio

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

#: The most bytes a request head (request line and headers) may take: h11's limit in uvicorn, kept.
MAX_HEAD_BYTES = 16 * 1024
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 32\r\nconnection: close\r\n\r\nRequest header fields too large\n"
)


def head_timeout_protocol(head_timeout_s: float) -> type[HttpToolsProtocol]:
    """An `HttpToolsProtocol` subclass (for `uvicorn.Config(http=...)`) with a request-head deadline and
    size limit."""

    class HeadTimeoutProtocol(HttpToolsProtocol):
        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, object],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_open = False  # between a message's first byte and the end of its headers
            self._head_bytes = 0

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # Counted after parsing: a chunk in which the head ended may carry body bytes, which do not
            # count. So at most MAX_HEAD_BYTES plus one read (256 KiB) of a head is ever held.
            if not self._head_open:
                return
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self.transport.write(_HEAD_TOO_LARGE)
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_open, self._head_bytes = True, 0

        def on_headers_complete(self) -> None:
            self._head_open = False
            super().on_headers_complete()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(head_timeout_s, self._deadline)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _deadline(self) -> None:
            self._head_timer = None
            # Every answered request re-arms the timer, so a cycle still open here is a request whose head
            # arrived and that is being answered: its body deadline is the application's business.
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutProtocol
