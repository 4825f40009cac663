"""`pulseseal run`: the key service, an encryptor and the gateway together, for development.

Each runs as its own process, as in production (the key service must stay a separate process); this
command starts them in dependency order, waits until each is ready (`/healthz`; the encryptor's
`/readyz`), and stops them all when one stops or on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from pulseseal.settings import load_settings
from shell.cli.errors import CliError, ExitCode
from shell.processes import Child, StartFailed, spawn, spawn_encryptor, stop_all

READY_TIMEOUT_S = 30.0
#: Settings only the key service may see: the master key (given directly) and the key store's address and
#: password. The encryptor and the gateway never get them from `run` (nor from the demo).
KEYSERVICE_ONLY = (
    "PULSESEAL_MASTER_KEY",
    "PULSESEAL_KEYSTORE_REDIS_URL",
    "PULSESEAL_KEYSTORE_REDIS_PASSWORD_FILE",
)
STOP_TIMEOUT_S = 25.0


def run() -> None:
    """Run the key service, an encryptor and the gateway until Ctrl-C (or one of them stops)."""
    settings = load_settings()
    children: list[Child] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with tempfile.TemporaryDirectory(prefix="pulseseal-run-") as run_dir:
        try:
            children.append(spawn("keyservice", ["keyservice"], env=child_env("keyservice", os.environ)))
            _ready(children[-1], settings.keyservice_url)
            # On the configured metrics port (Prometheus scrapes it there); the port file says when it listens.
            children.append(
                spawn_encryptor(
                    "encryptor", Path(run_dir), metrics_port=None, env=child_env("encryptor", os.environ)
                )
            )
            _ready(children[-1], None)
            children.append(spawn("gateway", ["gateway"], env=child_env("gateway", os.environ)))
            _ready(children[-1], settings.gateway_url)
            print(
                "pulseseal run: key service, encryptor and gateway are up (Ctrl-C stops them)",
                file=sys.stderr,
            )
            while not stopping:
                for child in children:
                    if not child.running():
                        raise CliError(
                            f"{child.name} exited with code {child.process.returncode}; stopping the others"
                        )
                time.sleep(0.2)
        finally:
            # Producers first, key service last: the encryptor still needs keys while it drains.
            stop_all(children, STOP_TIMEOUT_S)
    raise SystemExit(ExitCode.OK)


def child_env(name: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of component `name`: ours, without the key service's secrets unless it is that."""
    if name == "keyservice":
        return dict(environ)
    return {k: v for k, v in environ.items() if k not in KEYSERVICE_ONLY}


def _ready(child: Child, base_url: str | None) -> None:
    """Wait for `base_url`'s `/healthz`, or an encryptor's `/readyz` (None).

    Raises:
        CliError: the child exited or did not get ready in `READY_TIMEOUT_S`.
    """
    try:
        if base_url is None:
            child.wait_encryptor_ready(READY_TIMEOUT_S)
        else:
            child.wait_ready(base_url.rstrip("/") + "/healthz", READY_TIMEOUT_S)
    except StartFailed as exc:
        raise CliError(str(exc)) from None
