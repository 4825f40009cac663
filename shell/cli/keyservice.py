"""`pulseseal keyservice`: run the key service (docs/contract.md §6) on uvicorn."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from keyservice.app import create_app
from keyservice.bootstrap import open_service, options_from_settings
from keyservice.client.transport import check_server_transport
from keyservice.service import KeyService
from keyservice.wire.errors import KeyServiceError
from pulseseal.logs import configure_logging
from pulseseal.settings import Settings, load_settings
from shell.cli.errors import CliError
from shell.slowloris import head_timeout_protocol

log = logging.getLogger("keyservice")


def run(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default PULSESEAL_KEYSERVICE_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default PULSESEAL_KEYSERVICE_PORT).")] = None,
    allow_volatile_keystore: Annotated[
        bool,
        typer.Option("--allow-volatile-keystore", help="Start on a key-store Redis without AOF (dev only)."),
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the key service: per-user data keys for authenticated callers."""
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise CliError(f"unknown log level {log_level!r}: use debug, info, warning or error")
    configure_logging("keyservice", level)
    settings = load_settings()
    asyncio.run(
        _serve(
            settings,
            host or settings.keyservice_host,
            port or settings.keyservice_port,
            allow_volatile_keystore,
            log_level.lower(),
        )
    )


class _Server(uvicorn.Server):
    """uvicorn, telling the service when it is asked to stop: a held-open shred stream would otherwise keep
    a graceful shutdown waiting for ever; told, each stream ends within a heartbeat."""

    def __init__(self, config: uvicorn.Config, service: KeyService) -> None:
        super().__init__(config)
        self._service = service

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._service.erasure.notices.closing = True
        super().handle_exit(sig, frame)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only for sockets whose proto
    # says TCP, and without it Nagle + delayed ACK add ~40 ms to every small response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another --port") from None
    return sock


async def _serve(settings: Settings, host: str, port: int, allow_volatile: bool, log_level: str) -> None:
    cert, key = settings.keyservice_tls_cert, settings.keyservice_tls_key
    if (cert is None) != (key is None):
        raise CliError("give both PULSESEAL_KEYSERVICE_TLS_CERT and PULSESEAL_KEYSERVICE_TLS_KEY, or neither")
    try:
        check_server_transport(host, tls=cert is not None)
        options = options_from_settings(settings, allow_volatile=allow_volatile)
    except KeyServiceError as exc:
        raise CliError(exc.detail) from None
    sock = _listen(host, port)  # before anything else, so a busy port fails fast and alone
    try:
        service = await open_service(options)
    except KeyServiceError as exc:
        sock.close()
        raise CliError(exc.detail) from None
    try:
        config = uvicorn.Config(
            create_app(service, seal_budget=settings.key_seal_budget),
            ssl_certfile=str(cert) if cert else None,
            ssl_keyfile=str(key) if key else None,
            log_config=None,
            log_level=log_level,
            access_log=False,
            lifespan="off",
            server_header=False,
            # The network allow-list is about the TCP peer (contract §6): uvicorn's default would let an
            # X-Forwarded-For header rewrite `request.client`, and FORWARDED_ALLOW_IPS=* from anywhere.
            proxy_headers=False,
            http=head_timeout_protocol(settings.keyservice_body_timeout_s),
        )
        # Startup objects never die: moving them out of the collector's reach keeps full collections short,
        # which is most of the key service's tail latency on a busy 2-core machine.
        gc.freeze()
        scheme = "https" if cert else "http"
        log.info("key service listening on %s://%s:%d", scheme, host, port)
        await _Server(config, service).serve(sockets=[sock])
    finally:
        await service.close()
