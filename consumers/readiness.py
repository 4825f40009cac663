"""The encryptor's readiness: `/readyz` next to Prometheus `/metrics` on its metrics port.

`/readyz` answers 200 while the encryptor is connected to RabbitMQ, consuming `pulseseal.seal`, and can
reach the key service and MongoDB; 503 otherwise (and from the moment it starts draining). The body names
each check and whether it passed (`{"ready": false, "checks": {"broker": true, "keyservice": false, ...}}`),
never a URL, id or value. Tools that start encryptors (`pulseseal run`, the demo, the soak, the benchmark,
the tests) poll it instead of reading the encryptor's logs.

The checks run in the encryptor's event loop (`ReadinessWatch`, one probe round every `interval_s`);
the HTTP server runs in a thread of its own (as `prometheus_client`'s does) and only reads the last
round's answers, so a slow dependency never blocks a probe request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger("pulseseal.encryptor")

BROKER, CONSUMING, KEYSERVICE, STORE = "broker", "consuming", "keyservice", "store"
CHECKS = (BROKER, CONSUMING, KEYSERVICE, STORE)

Probe = Callable[[], Awaitable[bool]]
_Environ = dict[str, Any]
_StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Readiness:
    """The last answer of each check; written from the event loop, read from the HTTP thread."""

    def __init__(self, checks: Iterable[str] = CHECKS) -> None:
        self._lock = threading.Lock()
        self._passed = dict.fromkeys(checks, False)
        self._stopping = False

    def mark(self, check: str, passed: bool) -> None:
        """Record the outcome of one check."""
        with self._lock:
            self._passed[check] = passed

    def stopping(self) -> None:
        """Not ready from now on, whatever the checks say (the encryptor is draining)."""
        with self._lock:
            self._stopping = True

    def report(self) -> tuple[bool, dict[str, bool]]:
        """Whether every check passed (and not stopping), and each check's outcome."""
        with self._lock:
            checks = dict(self._passed)
            return not self._stopping and all(checks.values()), checks


class ReadinessWatch:
    """Runs every probe once per `interval_s` and records the outcomes in `readiness`.

    A probe that raises or takes longer than `timeout_s` counts as failed.

    Args:
        readiness: Where outcomes go.
        probes: One awaitable probe per check name.
        interval_s: Time between the start of two rounds.
        timeout_s: Longest a probe may take.
    """

    def __init__(
        self,
        readiness: Readiness,
        probes: Mapping[str, Probe],
        *,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        self._readiness = readiness
        self._probes = dict(probes)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    async def probe_once(self) -> None:
        """Run every probe now (concurrently) and record their outcomes."""
        names = list(self._probes)
        outcomes = await asyncio.gather(*(self._run(self._probes[name]) for name in names))
        for name, passed in zip(names, outcomes, strict=True):
            self._readiness.mark(name, passed)

    async def start(self) -> None:
        """Run one round now, then keep probing in the background (idempotent)."""
        if self._task is None:
            await self.probe_once()
            self._task = asyncio.create_task(self._loop(), name="readiness")

    async def stop(self) -> None:
        """Mark not ready and stop probing."""
        self._readiness.stopping()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.probe_once()

    async def _run(self, probe: Probe) -> bool:
        try:
            return bool(await asyncio.wait_for(probe(), self._timeout_s))
        except Exception:  # noqa: BLE001 - any failure of a probe means "not ready", nothing more
            return False


def status_app(readiness: Readiness) -> Callable[[_Environ, _StartResponse], Iterable[bytes]]:
    """A WSGI app: `/readyz` from `readiness`, everything else Prometheus (`/metrics`)."""
    metrics = make_wsgi_app()

    def app(environ: _Environ, start_response: _StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/readyz":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        ready, checks = readiness.report()
        body = json.dumps({"ready": ready, "checks": checks}, separators=(",", ":")).encode()
        status = "200 OK" if ready else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing: probes every second would drown the encryptor's own log lines."""


def start_status_server(host: str, port: int, readiness: Readiness) -> WSGIServer:
    """Serve `/metrics` and `/readyz` on `host:port` from a daemon thread; port 0 picks a free port.

    Returns:
        The server; `server.server_port` is the port it listens on.

    Raises:
        OSError: the address cannot be bound (in use, not permitted).
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class _Server(ThreadingWSGIServer):
        address_family = family  # IPv6 hosts too, as prometheus_client's own server allows

    server = make_server(host, port, status_app(readiness), _Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="status-http", daemon=True)
    thread.start()
    return server
