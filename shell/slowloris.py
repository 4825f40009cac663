"""uvicorn's HTTP/1.1 protocol with a deadline on request heads (slowloris), for both HTTP services.

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but a connection that sends its
request head one byte at a time has no deadline at all: a few hundred of them hold as many sockets and
file descriptors for as long as the attacker likes. This protocol closes a connection whose next request
head has not arrived within `head_timeout_s` of the connection opening or of the previous answer. Slow
*bodies* are the applications' own deadline (`PULSESEAL_*_BODY_TIMEOUT_S`).

The parser is httptools (C) rather than h11 (pure Python): under a junk-request flood the HTTP parsing and
serialising was most of what a refusal cost the key service, and that CPU is taken from the legitimate
callers' requests (docs/threat-model.md, the flood).
"""

from __future__ import annotations

import asyncio

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState


def head_timeout_protocol(head_timeout_s: float) -> type[HttpToolsProtocol]:
    """An `HttpToolsProtocol` subclass (for `uvicorn.Config(http=...)`) with a request-head deadline."""

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
