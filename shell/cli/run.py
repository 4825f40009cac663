"""`pulseseal run`: the key service, an encryptor and the gateway together, for development.

Each runs as its own process, as in production (the key service must stay a separate process); this
command starts them in dependency order, waits until each is ready (`/healthz`; the encryptor's
`/readyz`), and stops them all when one stops or on Ctrl-C / SIGTERM.

`--keyservice-replicas N` starts N key-service processes on consecutive ports from
`PULSESEAL_KEYSERVICE_PORT` (shell/keyservice_replicas.py) and gives the encryptor and the gateway the
list of their URLs as `PULSESEAL_KEYSERVICE_URL`: their requests spread over the replicas and fail over.
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
from typing import Annotated

import typer

from pulseseal.settings import load_settings
from shell.cli.errors import CliError, ExitCode
from shell.keyservice_replicas import MAX_REPLICAS, plan_replicas
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


def run(
    keyservice_replicas: Annotated[
        int,
        typer.Option(
            "--keyservice-replicas",
            min=1,
            max=MAX_REPLICAS,
            help="Key-service processes, on consecutive ports from PULSESEAL_KEYSERVICE_PORT; the "
            "encryptor and the gateway get all their URLs.",
        ),
    ] = 1,
) -> None:
    """Run the key service, an encryptor and the gateway until Ctrl-C (or one of them stops)."""
    settings = load_settings()
    environ = dict(os.environ)
    keyservices = ["keyservice"]
    keyservice_urls = [settings.keyservice_urls[0]]
    keyservice_envs = [child_env("keyservice", environ)]
    if keyservice_replicas > 1:
        try:
            plan = plan_replicas(keyservice_replicas, settings.keyservice_urls[0], settings.keyservice_port)
        except ValueError as exc:
            raise CliError(f"{exc}: set PULSESEAL_KEYSERVICE_PORT lower") from None
        keyservices = [f"keyservice-{i + 1}" for i in range(keyservice_replicas)]
        keyservice_urls = list(plan.urls)
        keyservice_envs = [plan.env(i, keyservice_envs[0]) for i in range(keyservice_replicas)]
        environ["PULSESEAL_KEYSERVICE_URL"] = plan.keyservice_url
    children: list[Child] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with tempfile.TemporaryDirectory(prefix="pulseseal-run-") as run_dir:
        try:
            for name, url, env in zip(keyservices, keyservice_urls, keyservice_envs, strict=True):
                children.append(spawn(name, ["keyservice"], env=env))
                _ready(children[-1], url)
            # On the configured metrics port (Prometheus scrapes it there); the port file says when it listens.
            children.append(
                spawn_encryptor(
                    "encryptor", Path(run_dir), metrics_port=None, env=child_env("encryptor", environ)
                )
            )
            _ready(children[-1], None)
            children.append(spawn("gateway", ["gateway"], env=child_env("gateway", environ)))
            _ready(children[-1], settings.gateway_url)
            replicas = (
                f" ({len(keyservices)} replicas: {', '.join(keyservice_urls)})"
                if len(keyservices) > 1
                else ""
            )
            print(
                f"pulseseal run: key service{replicas}, encryptor and gateway are up (Ctrl-C stops them)",
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
            # Producers first, key services last: the encryptor still needs keys while it drains.
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
