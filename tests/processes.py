"""Running PulseSeal components as real processes in tests (`pulseseal keyservice`, `encryptor`, ...).

Each component gets an environment of its own (vhost, database, key-store prefix, ports), so a test
session never touches the data of another session or of a running demo.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shell.processes import Child, StartFailed, free_port, run, spawn, spawn_encryptor

__all__ = ["ROOT", "Component", "free_port", "services", "start", "start_encryptor", "wait_healthy"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Component:
    """One running `pulseseal <command>` process and where its output goes (a `shell.processes.Child`
    with the environment it was given and its whole log at hand for failure messages)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)
    port_file: Path | None = field(default=None, repr=False)

    @property
    def child(self) -> Child:
        """The process as `shell.processes` handles it."""
        return Child(self.name, self.process, self.log_path, self.port_file)

    def log(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL after the timeout)."""
        return self.child.stop(timeout_s)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, like a crashed host."""
        self.child.kill()


def _log_path(name: str, log_dir: Path) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir / f"{name}-{len(list(log_dir.glob(f'{name}-*.log')))}.log"


def start(name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> Component:
    """Start `pulseseal <args>` with `env` added to this process's environment."""
    log_path = _log_path(name, log_dir)
    # In this process's session: an interrupted test run takes its components with it.
    child = spawn(
        name, args, env={**os.environ, **env}, log=log_path, append=False, cwd=ROOT, new_session=False
    )
    return Component(name, child.process, log_path, dict(env))


def start_encryptor(env: Mapping[str, str], log_dir: Path, timeout_s: float = 30.0) -> Component:
    """Start `pulseseal encryptor` on a free metrics port and wait until its `/readyz` answers 200.

    Raises:
        AssertionError: it exited or did not get ready in time (its log is in the message).
    """
    log_path = _log_path("encryptor", log_dir)
    child = spawn_encryptor(
        log_path.stem,
        log_dir,
        env={**os.environ, **env},
        log=log_path,
        append=False,
        cwd=ROOT,
        new_session=False,
    )
    component = Component("encryptor", child.process, log_path, dict(env), child.port_file)
    try:
        child.wait_encryptor_ready(timeout_s)
    except StartFailed as exc:
        component.stop()
        raise AssertionError(f"{exc}:\n{component.log()}") from None
    return component


def wait_healthy(component: Component, url: str, timeout_s: float = 30.0) -> None:
    """Wait until `url` answers 200; fail with the component's log if it exits or takes too long."""
    try:
        component.child.wait_ready(url, timeout_s)
    except StartFailed as exc:
        raise AssertionError(f"{exc}:\n{component.log()}") from None


def wait_logged(component: Component, text: str, timeout_s: float = 30.0) -> None:
    """Wait until the component's log contains `text` (for events that have no endpoint, such as an
    encryptor starting to follow shred notices; readiness itself is `/readyz`)."""
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
    result = run(["services", action, *names], cwd=ROOT, timeout_s=180)
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
