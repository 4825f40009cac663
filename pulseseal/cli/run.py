"""`pulseseal run`: the key service, an encryptor and the gateway together, for development.

Each runs as its own process, as in production (the key service must stay a separate process); this
command starts them in dependency order, waits until each answers, and stops them all when one stops or
on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

import httpx

from pulseseal.cli.errors import CliError, ExitCode
from pulseseal.settings import Settings, load_settings

READY_TIMEOUT_S = 30.0
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
            children.append((name, _spawn(name)))
            if health is not None:
                _wait_healthy(name, health, children[-1][1])
        print("pulseseal run: key service, encryptor and gateway are up (Ctrl-C stops them)", file=sys.stderr)
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    raise CliError(f"{name} exited with code {child.returncode}; stopping the others")
            time.sleep(0.2)
    finally:
        _stop_all(children)
    raise SystemExit(ExitCode.OK)


def _components(settings: Settings) -> list[tuple[str, str | None]]:
    return [
        ("keyservice", settings.keyservice_url.rstrip("/") + "/healthz"),
        ("encryptor", None),
        ("gateway", settings.gateway_url.rstrip("/") + "/healthz"),
    ]


def _spawn(name: str) -> subprocess.Popen[bytes]:
    # New session: a Ctrl-C in the terminal reaches this process only, which then stops the children in
    # order instead of all of them dying at once.
    return subprocess.Popen([sys.executable, "-m", "pulseseal", name], start_new_session=True)


def _wait_healthy(name: str, url: str, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    verify = True
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise CliError(f"{name} exited with code {child.returncode} while starting; see its log above")
        try:
            if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise CliError(f"{name} did not answer {url} within {READY_TIMEOUT_S:.0f} s")


def _stop_all(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    # Producers first, key service last: the encryptor still needs keys while it drains.
    for _, child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
