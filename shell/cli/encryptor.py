"""`pulseseal encryptor`: run one encryptor process (docs/contract.md §8).

Its metrics port serves Prometheus `/metrics` and `/readyz` (200 once it is connected to RabbitMQ,
consuming, and can reach the key service and MongoDB; `consumers/readiness.py`). With `--metrics-port 0`
the port is chosen by the system: `--port-file` names a file the chosen port is written to (one line,
written atomically once the port listens), and the log line `metrics listening` carries it as `port`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.encryptor import Encryptor, tune_garbage_collector
from consumers.keys import KeyServiceSource, following_shreds
from consumers.readiness import Readiness, start_status_server
from consumers.transit import TransportGate
from consumers.usage import UsageReporter
from keyservice.client import KeyServiceClient
from keyservice.client.transport_keys import TransportKeyRing
from keyservice.client.transport_public import TransportSealer
from keyservice.client.usage import report_usage
from keyservice.wire.errors import KeyServiceError
from pulseseal import mongo
from pulseseal.ferretdb_sql import StoreIndexError
from pulseseal.files import write_atomic
from pulseseal.logs import configure_logging
from pulseseal.settings import Settings, load_settings
from shell.cli.errors import CliError
from shell.credentials import ENCRYPTOR_SIGNING_KEY_FILE, CredentialsError, load_private_key

log = logging.getLogger("pulseseal.encryptor")


def run(
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Port of /metrics and /readyz (default PULSESEAL_ENCRYPTOR_METRICS_PORT; 0 picks a free one)."
        ),
    ] = None,
    port_file: Annotated[
        Path | None,
        typer.Option(help="Write the metrics port to this file once it listens (for --metrics-port 0)."),
    ] = None,
) -> None:
    """Run an encryptor: seal events from `pulseseal.seal` into MongoDB. Start several to share the work."""
    serve(metrics_port, port_file)


def serve(metrics_port: int | None, port_file: Path | None, *, manifests: bool = True) -> None:
    """`pulseseal encryptor`; `manifests=False` only for the benchmark's baseline (`bench.plain_encryptor`).

    Raises:
        CliError: a port, a credential or the store is not usable (one line).
    """
    configure_logging("encryptor")
    settings = load_settings()
    port = settings.encryptor_metrics_port if metrics_port is None else metrics_port
    readiness = Readiness()
    try:
        server = start_status_server(settings.metrics_host, port, readiness)
    except OSError as exc:
        raise CliError(
            f"cannot serve metrics on {settings.metrics_host}:{port} ({exc.strerror}): "
            "set PULSESEAL_ENCRYPTOR_METRICS_PORT or --metrics-port (0 picks a free port)"
        ) from None
    log.info("metrics listening", extra={"port": server.server_port})
    if port_file is not None:
        try:
            write_atomic(port_file, f"{server.server_port}\n".encode(), mode=0o644)
        except OSError as exc:
            raise CliError(f"cannot write the port file {port_file}: {exc.strerror}") from None
    try:
        client = KeyServiceClient.from_settings(settings, "encryptor")
    except KeyServiceError as exc:
        raise CliError(f"{exc.detail}; run `pulseseal services up` to create dev credentials") from None
    manifest_key = None
    if manifests:
        try:
            manifest_key = load_private_key(
                settings.credential(settings.encryptor_signing_key, ENCRYPTOR_SIGNING_KEY_FILE)
            )
        except CredentialsError as exc:
            raise CliError(f"manifest signing key: {exc}") from None
    try:
        asyncio.run(_run(settings, client, readiness, manifest_key))
    except StoreIndexError as exc:  # one line naming what to do, never a secret
        raise CliError(str(exc)) from None


async def _run(
    settings: Settings, client: KeyServiceClient, readiness: Readiness, manifest_key: Ed25519PrivateKey | None
) -> None:
    mongo_client: Any = mongo.connect(settings.mongo_url)
    sealer = TransportSealer.from_settings(settings)
    transport = TransportGate(TransportKeyRing(client), sealer)
    usage = UsageReporter(lambda counts: report_usage(client, counts), interval_s=settings.key_usage_report_s)
    encryptor = Encryptor(
        settings,
        KeyServiceSource(client),
        mongo_client,
        readiness=readiness,
        transport=transport,
        manifest_key=manifest_key,
        usage=usage,
    )
    tune_garbage_collector()
    try:
        async with following_shreds(client):
            await encryptor.app.run()
    finally:
        await client.aclose()
        await sealer.aclose()
        await mongo_client.close()
    log.info("encryptor stopped")
