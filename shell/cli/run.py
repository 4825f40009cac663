"""`pulseseal run`: the key service, an encryptor and the gateway together, for development.

Each runs as its own process, as in production (the key service must stay a separate process); this
command starts them in dependency order, waits until each answers, and stops them all when one stops or
on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import httpx

from pulseseal.settings import Settings, load_settings
from shell.cli.errors import CliError, ExitCode

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
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for name, health in _components(settings):
            children.append((name, spawn(name)))
            if health is not None:
                wait_healthy(name, health, children[-1][1])
        print("pulseseal run: key service, encryptor and gateway are up (Ctrl-C stops them)", file=sys.stderr)
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    raise CliError(f"{name} exited with code {child.returncode}; stopping the others")
            time.sleep(0.2)
    finally:
        stop_all(children)
    raise SystemExit(ExitCode.OK)


def _components(settings: Settings) -> list[tuple[str, str | None]]:
    return [
        ("keyservice", settings.keyservice_url.rstrip("/") + "/healthz"),
        ("encryptor", None),
        ("gateway", settings.gateway_url.rstrip("/") + "/healthz"),
    ]


def spawn(name: str, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `pulseseal <name> <args>` as a child; its output goes to `log` when given.

    The child gets a session of its own: a Ctrl-C in the terminal reaches this process only, which then
    stops the children in order instead of all of them dying at once.
    """
    command = [sys.executable, "-m", "shell", name, *args]
    env = child_env(name, os.environ)
    if log is None:
        return subprocess.Popen(command, start_new_session=True, env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            command, start_new_session=True, stdout=out, stderr=subprocess.STDOUT, env=env
        )


def child_env(name: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of component `name`: ours, without the key service's secrets unless it is that."""
    if name == "keyservice":
        return dict(environ)
    return {k: v for k, v in environ.items() if k not in KEYSERVICE_ONLY}


def wait_healthy(name: str, url: str, child: subprocess.Popen[bytes]) -> None:
    """Wait until `url` answers 200.

    Raises:
        CliError: the child exited, or did not answer within `READY_TIMEOUT_S`.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise CliError(f"{name} exited with code {child.returncode} while starting; see its log")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise CliError(f"{name} did not answer {url} within {READY_TIMEOUT_S:.0f} s")


def stop_all(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """SIGTERM each child in reverse start order, waiting for each (SIGKILL after a timeout)."""
    # Producers first, key service last: the encryptor still needs keys while it drains.
    for _, child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
