"""Running PulseSeal components as real processes in tests (`pulseseal keyservice`, `encryptor`, ...).

Each component gets an environment of its own (vhost, database, key-store prefix, ports), so a test
session never touches the data of another session or of a running demo.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Component:
    """One running `pulseseal <command>` process and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

    def log(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL after the timeout)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, like a crashed host."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start(name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> Component:
    """Start `pulseseal <args>` with `env` added to this process's environment."""
    log_dir.mkdir(parents=True, exist_ok=True)
    index = len(list(log_dir.glob(f"{name}-*.log")))
    log_path = log_dir / f"{name}-{index}.log"
    full_env = {**os.environ, **env}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "shell", *args],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    return Component(name, process, log_path, dict(env))


def wait_healthy(component: Component, url: str, timeout_s: float = 30.0) -> None:
    """Wait until `url` answers 200; fail with the component's log if it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if component.process.poll() is not None:
            raise AssertionError(
                f"{component.name} exited ({component.process.returncode}):\n{component.log()}"
            )
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{component.name} not healthy at {url} after {timeout_s} s:\n{component.log()}")


def wait_logged(component: Component, text: str, timeout_s: float = 30.0) -> None:
    """Wait until the component's log contains `text`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in component.log():
            return
        if component.process.poll() is not None:
            raise AssertionError(
                f"{component.name} exited ({component.process.returncode}):\n{component.log()}"
            )
        time.sleep(0.1)
    raise AssertionError(f"{component.name} never logged {text!r}:\n{component.log()}")


def services(action: str, *names: str) -> None:
    """`pulseseal services <action> <names>` (stopping or starting one local server in a fault test)."""
    result = subprocess.run(
        [sys.executable, "-m", "shell", "services", action, *names],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"services {action} {' '.join(names)} failed:\n{result.stdout}\n{result.stderr}")
    if action == "down":
        require_stopped(result.stdout, names)


def require_stopped(output: str, names: tuple[str, ...]) -> None:
    """Fail unless `services down` really stopped each server: one that this home did not start (another
    checkout's) is left running, and a fault test would then pass without its fault."""
    for name in names:
        if f"{name}: stopped" not in output:
            raise AssertionError(
                f"{name} was not stopped, so this fault test cannot inject its fault: the server on its port "
                f"was not started from this checkout's PULSESEAL_HOME (stop that one first):\n{output}"
            )
