"""PulseSeal components as child processes: start, wait until ready, stop — one way for every tool.

`pulseseal run`, the demo, the soak, the benchmark and the tests all start `python -m shell <command>`
through `spawn`, wait for the component's HTTP readiness (`/healthz` of the key service and the gateway,
`/readyz` on the encryptor's metrics port) with `Child.wait_ready`, and stop it with `Child.stop`
(SIGTERM, then SIGKILL after a timeout). A component that exits or does not get ready in time is a
`StartFailed` whose message names its log file.

    child = spawn("keyservice", ["keyservice"], env=env, log=logs / "keyservice.log")
    child.wait_ready(url + "/healthz")
    ...
    child.stop()

An encryptor started with `--metrics-port 0` picks its own port; `spawn_encryptor` passes it a
`--port-file` and `Child.encryptor_port` reads the port back once it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_POLL_S = 0.1


class StartFailed(Exception):
    """A component exited while starting or did not get ready in time; the message names its log."""


def free_port() -> int:
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether nothing listens on `port` of 127.0.0.1 right now (it can be bound)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def command(args: Sequence[str]) -> list[str]:
    """The command line of `pulseseal <args>` run by this interpreter."""
    return [sys.executable, "-m", "shell", *args]


@dataclass
class Child:
    """One running component and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path | None
    port_file: Path | None = field(default=None, repr=False)
    group: bool = False
    """Started in a session of its own: `stop` signals its whole process group."""

    @property
    def where(self) -> str:
        """Where to look when it fails: its log file, or the terminal."""
        return f"see {self.log}" if self.log is not None else "see its output above"

    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.process.poll() is None

    def wait_ready(
        self, url: str, timeout_s: float = READY_TIMEOUT_S, *, verify: ssl.SSLContext | bool = True
    ) -> None:
        """Wait until `url` answers 200 (over HTTPS verified with `verify`).

        Raises:
            StartFailed: the process exited, or `url` did not answer 200 within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2, verify=verify) as http:
            while True:
                self._check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise StartFailed(
                        f"{self.name} did not answer {url} within {timeout_s:.0f} s; {self.where}"
                    )
                time.sleep(_POLL_S)

    async def wait_ready_async(self, url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """`wait_ready` without blocking the event loop.

        Raises:
            StartFailed: the process exited, or `url` did not answer 200 within `timeout_s`.
        """
        await asyncio.to_thread(self.wait_ready, url, timeout_s)

    def encryptor_port(self, timeout_s: float = READY_TIMEOUT_S) -> int:
        """The metrics port an encryptor started by `spawn_encryptor` listens on, once it does.

        Raises:
            StartFailed: it exited or wrote no port within `timeout_s`.
            ValueError: it was not started with a port file.
        """
        if self.port_file is None:
            raise ValueError(f"{self.name} was not started with a port file")
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(self.port_file.read_text().strip())
            if time.monotonic() > deadline:
                raise StartFailed(f"{self.name} did not listen within {timeout_s:.0f} s; {self.where}")
            time.sleep(_POLL_S)

    def wait_encryptor_ready(self, timeout_s: float = READY_TIMEOUT_S) -> int:
        """Wait until an encryptor's `/readyz` answers 200; returns its metrics port.

        Raises:
            StartFailed: it exited or did not get ready within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        port = self.encryptor_port(timeout_s)
        self.wait_ready(readyz_url(port), max(0.0, deadline - time.monotonic()))
        return port

    async def wait_encryptor_ready_async(self, timeout_s: float = READY_TIMEOUT_S) -> int:
        """`wait_encryptor_ready` without blocking the event loop.

        Raises:
            StartFailed: it exited or did not get ready within `timeout_s`.
        """
        return await asyncio.to_thread(self.wait_encryptor_ready, timeout_s)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL; returns the exit code (never raises)."""
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return int(self.process.wait())

    async def stop_async(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """`stop` without blocking the event loop."""
        return await asyncio.to_thread(self.stop, timeout_s)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, like a crashed host."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.group:
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise StartFailed(
                f"{self.name} exited with code {self.process.returncode} while starting; {self.where}"
            )


def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Run `pulseseal <args>` to completion and return what it printed (never raises for its exit code).

    Raises:
        subprocess.TimeoutExpired: it did not finish within `timeout_s` (it is killed).
    """
    return subprocess.run(
        command(args),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def readyz_url(port: int) -> str:
    """Where an encryptor listening on metrics port `port` answers `/readyz`."""
    return f"http://127.0.0.1:{port}/readyz"


def spawn(
    name: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    append: bool = True,
    cwd: Path | None = None,
    new_session: bool = True,
    port_file: Path | None = None,
) -> Child:
    """Start `pulseseal <args>` as a child process.

    Args:
        name: What to call it in messages.
        args: The command and its options (`["keyservice"]`, `["encryptor", "--metrics-port", "0"]`).
        env: The whole environment (default: this process's).
        log: File for its stdout and stderr (default: this process's terminal).
        append: Append to `log` (every incarnation of a component in one file) rather than truncate it.
        cwd: Working directory.
        new_session: Give it a session of its own, so a Ctrl-C in the terminal reaches the parent only
            (which then stops its children in order) and `stop` reaches its whole process group.
        port_file: Where an encryptor was told to write its port (see `spawn_encryptor`).
    """
    options: dict[str, object] = {
        "env": dict(env) if env is not None else None,
        "cwd": cwd,
        "stdin": subprocess.DEVNULL,
        "start_new_session": new_session,
    }
    if log is None:
        process = subprocess.Popen(command(args), **options)  # type: ignore[call-overload]
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab" if append else "wb") as out:
            process = subprocess.Popen(command(args), stdout=out, stderr=subprocess.STDOUT, **options)  # type: ignore[call-overload]
    return Child(name, process, log, port_file, group=new_session)


def spawn_encryptor(
    name: str,
    run_dir: Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    append: bool = True,
    cwd: Path | None = None,
    new_session: bool = True,
    metrics_port: int | None = 0,
) -> Child:
    """Start `pulseseal encryptor --metrics-port <metrics_port> --port-file <run_dir>/<name>.port <args>`.

    Then `child.wait_encryptor_ready()` waits for its `/readyz` and returns its metrics port. With
    `metrics_port` None the encryptor uses `PULSESEAL_ENCRYPTOR_METRICS_PORT`; with 0 (the default) the
    system picks a free port, so several encryptors can run side by side.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    port_file = run_dir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    port_args = [] if metrics_port is None else ["--metrics-port", str(metrics_port)]
    return spawn(
        name,
        ["encryptor", *port_args, "--port-file", str(port_file), *args],
        env=env,
        log=log,
        append=append,
        cwd=cwd,
        new_session=new_session,
        port_file=port_file,
    )


def stop_all(children: Sequence[Child], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop children in reverse start order (producers first, the key service last); never raises."""
    for child in reversed(children):
        child.stop(timeout_s)
