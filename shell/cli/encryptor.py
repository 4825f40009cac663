"""`pulseseal encryptor`: run one encryptor process (docs/contract.md §8)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import start_http_server

from consumers.encryptor import Encryptor, tune_garbage_collector
from consumers.keys import KeyServiceSource
from consumers.usage import UsageReporter
from keyservice.client import KeyServiceClient
from keyservice.client.usage import report_usage
from keyservice.wire.errors import KeyServiceError
from pulseseal import mongo
from pulseseal.logs import configure_logging
from pulseseal.settings import Settings, load_settings
from shell.cli.errors import CliError
from shell.credentials import ENCRYPTOR_SIGNING_KEY_FILE, CredentialsError, load_private_key

log = logging.getLogger("pulseseal.encryptor")


def run(
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Prometheus port (default PULSESEAL_ENCRYPTOR_METRICS_PORT; 0 picks a free one)."),
    ] = None,
) -> None:
    """Run an encryptor: seal events from `pulseseal.seal` into MongoDB. Start several to share the work."""
    configure_logging("encryptor")
    settings = load_settings()
    port = settings.encryptor_metrics_port if metrics_port is None else metrics_port
    try:
        server, _ = start_http_server(port, addr=settings.metrics_host)
    except OSError as exc:
        raise CliError(
            f"cannot serve metrics on {settings.metrics_host}:{port} ({exc.strerror}): "
            "set PULSESEAL_ENCRYPTOR_METRICS_PORT or --metrics-port (0 picks a free port)"
        ) from None
    log.info("metrics on port %d", server.server_port)
    try:
        client = KeyServiceClient.from_settings(settings, "encryptor")
    except KeyServiceError as exc:
        raise CliError(f"{exc.detail}; run `pulseseal services up` to create dev credentials") from None
    try:
        manifest_key = load_private_key(
            settings.credential(settings.encryptor_signing_key, ENCRYPTOR_SIGNING_KEY_FILE)
        )
    except CredentialsError as exc:
        raise CliError(f"manifest signing key: {exc}") from None
    asyncio.run(_run(settings, client, manifest_key))


async def _run(settings: Settings, client: KeyServiceClient, manifest_key: Ed25519PrivateKey | None) -> None:
    mongo_client: Any = mongo.connect(settings.mongo_url)
    usage = UsageReporter(lambda counts: report_usage(client, counts), interval_s=settings.key_usage_report_s)
    encryptor = Encryptor(
        settings, KeyServiceSource(client), mongo_client, manifest_key=manifest_key, usage=usage
    )
    tune_garbage_collector()
    try:
        await encryptor.app.run()
    finally:
        await client.aclose()
        await mongo_client.close()
    log.info("encryptor stopped")
