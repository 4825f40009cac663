"""The encryptor without batch manifests — the benchmark's baseline that prices them, never the product.

`python -m bench.plain_encryptor --metrics-port 0` is `pulseseal encryptor --metrics-port 0` with no
manifest signing key: the same broker subscription, batcher, sealing and usage reports, and no
`seal_manifests` write. The benchmark drains the same events with both (scenario e2e) and reports the ratio.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from prometheus_client import start_http_server

from keyservice.client import KeyServiceClient
from pulseseal.logs import configure_logging
from pulseseal.settings import load_settings
from shell.cli.encryptor import _run

log = logging.getLogger("pulseseal.encryptor")


def main(argv: list[str]) -> None:
    """Run the encryptor without manifests; `--metrics-port N` as `pulseseal encryptor` takes it."""
    configure_logging("encryptor")
    settings = load_settings()
    port = int(argv[argv.index("--metrics-port") + 1]) if "--metrics-port" in argv else 0
    server, _ = start_http_server(port, addr=settings.metrics_host)
    log.info("metrics on port %d", server.server_port)
    client = KeyServiceClient.from_settings(settings, "encryptor")
    asyncio.run(_run(settings, client, None))


if __name__ == "__main__":
    main(sys.argv[1:])
