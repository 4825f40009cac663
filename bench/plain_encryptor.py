"""The encryptor without batch manifests — the benchmark's baseline that prices them, never the product.

`python -m bench.plain_encryptor --metrics-port 0 --port-file F` is `pulseseal encryptor` with no manifest
signing key: the same broker subscription, batcher, sealing and usage reports, and no `seal_manifests`
write. The benchmark drains the same events with both (scenario e2e) and reports the ratio.
"""

from __future__ import annotations

import sys
from pathlib import Path

from shell.cli.encryptor import serve


def main(argv: list[str]) -> None:
    """Run the encryptor without manifests; `--metrics-port N` and `--port-file F` as the CLI takes them."""
    port = int(argv[argv.index("--metrics-port") + 1]) if "--metrics-port" in argv else 0
    port_file = Path(argv[argv.index("--port-file") + 1]) if "--port-file" in argv else None
    serve(port, port_file, manifests=False)


if __name__ == "__main__":
    main(sys.argv[1:])
