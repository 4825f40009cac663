"""`pulseseal gateway`: the HTTP gateway on uvicorn until interrupted."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Annotated

import typer
import uvicorn

from producers.gateway.app import create_app_from_settings
from producers.gateway.auth import AuthConfigError
from pulseseal.logs import configure_logging
from pulseseal.settings import load_settings
from shell.cli.errors import CliError
from shell.slowloris import head_timeout_protocol


def run(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: PULSESEAL_GATEWAY_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: PULSESEAL_GATEWAY_PORT).")] = None,
) -> None:
    """Run the gateway: POST /v1/events, /healthz, /metrics, /openapi.json."""
    settings = load_settings()
    configure_logging("gateway")
    try:
        app = create_app_from_settings(settings)
    except AuthConfigError as exc:
        raise CliError(
            f"{exc} — run `pulseseal services up` for dev credentials, or set "
            "PULSESEAL_GATEWAY_JWT_SECRET_FILE / PULSESEAL_GATEWAY_JWKS_FILE"
        ) from None
    address = (host or settings.gateway_host, port if port is not None else settings.gateway_port)
    # Bound here, not by uvicorn, so that a taken port is one clear line instead of a logged exit.
    try:
        sock = listening_socket(address)
    except OSError as exc:
        hint = "choose another with --port or PULSESEAL_GATEWAY_PORT" if exc.errno == errno.EADDRINUSE else ""
        raise CliError(
            f"cannot listen on {address[0]}:{address[1]}: {exc.strerror} {hint}".rstrip()
        ) from None
    config = uvicorn.Config(
        app,
        log_config=None,  # our JSON logging, configured above
        access_log=False,  # request lines would carry nothing we may not log, but cost time per request
        server_header=False,
        timeout_graceful_shutdown=10,
        # The peer is the TCP peer: uvicorn's default rewrites it from X-Forwarded-For (docs/threat-model.md).
        proxy_headers=False,
        http=head_timeout_protocol(settings.gateway_body_timeout_s),
    )
    try:
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    finally:
        sock.close()


def listening_socket(address: tuple[str, int]) -> socket.socket:
    """A TCP socket listening on `address`, for uvicorn.

    Raises:
        OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    # IPPROTO_TCP explicitly, not 0 (what socket.create_server uses): asyncio turns Nagle off
    # (TCP_NODELAY) only on sockets whose proto says TCP, and with Nagle on every answer waits out
    # the client's delayed ACK — measured: half the throughput, twice the latency.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock
