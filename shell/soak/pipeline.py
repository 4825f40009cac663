"""The soak's PulseSeal processes: one key service, encryptors, one gateway — started, killed, restarted.

Each runs as `python -m pulseseal <command>` with the soak's environment and a log file of its own (every
incarnation appends to its component's log, so the plaintext hunt sees all of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shell.soak.servers import SoakSetupError, free_port

READY_TIMEOUT_S = 60.0


@dataclass
class Child:
    """One running component."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int | None = None


def _spawn(name: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "shell", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@dataclass
class Pipeline:
    """The components of one soak run."""

    env: dict[str, str]
    logs: Path
    encryptors: list[Child] = field(default_factory=list)
    keyservice: Child | None = None
    gateway: Child | None = None

    @property
    def keyservice_url(self) -> str:
        """Where the key service answers."""
        return self.env["PULSESEAL_KEYSERVICE_URL"]

    @property
    def gateway_url(self) -> str:
        """Where the gateway answers."""
        return self.env["PULSESEAL_GATEWAY_URL"]

    @classmethod
    def configure(cls, base_env: dict[str, str], logs: Path, mongo_db: str) -> Pipeline:
        """Ports and settings for the components on top of the servers' environment."""
        keyservice_port, gateway_port = free_port(), free_port()
        env = dict(base_env)
        env.update(
            {
                "PULSESEAL_MONGO_DB": mongo_db,
                "PULSESEAL_KEYSERVICE_PORT": str(keyservice_port),
                "PULSESEAL_KEYSERVICE_URL": f"http://127.0.0.1:{keyservice_port}",
                "PULSESEAL_GATEWAY_PORT": str(gateway_port),
                "PULSESEAL_GATEWAY_URL": f"http://127.0.0.1:{gateway_port}",
                "PULSESEAL_IMPORT_RETRY_S": "30",
                "PULSESEAL_BATCH_MAX_MS": "50",
            }
        )
        return cls(env, logs)

    async def start_keyservice(self) -> None:
        """Start the key service and wait until it is healthy.

        Raises:
            SoakSetupError: it exited or did not get healthy in time.
        """
        process = _spawn("keyservice", ["keyservice"], self.env, self.logs / "keyservice.log")
        self.keyservice = Child("keyservice", process, self.logs / "keyservice.log")
        await _wait_healthy(self.keyservice, self.keyservice_url + "/healthz")

    async def start_gateway(self) -> None:
        """Start the gateway and wait until it is healthy.

        Raises:
            SoakSetupError: it exited or did not get healthy in time.
        """
        process = _spawn("gateway", ["gateway"], self.env, self.logs / "gateway.log")
        self.gateway = Child("gateway", process, self.logs / "gateway.log")
        await _wait_healthy(self.gateway, self.gateway_url + "/healthz")

    async def start_encryptor(self, slot: int) -> None:
        """Start an encryptor in `slot` (replacing a dead one) and wait until it says it is ready.

        Raises:
            SoakSetupError: it exited or did not get ready in time.
        """
        port = free_port()
        log = self.logs / f"encryptor-{slot}.log"
        offset = log.stat().st_size if log.exists() else 0
        process = _spawn("encryptor", ["encryptor", "--metrics-port", str(port)], self.env, log)
        child = Child(f"encryptor-{slot}", process, log, port)
        if slot < len(self.encryptors):
            self.encryptors[slot] = child
        else:
            self.encryptors.append(child)
        await _wait_logged(child, "encryptor ready", offset)

    def kill_encryptor(self, slot: int) -> None:
        """SIGKILL one encryptor: no draining, no acks, like a crashed host."""
        child = self.encryptors[slot]
        if child.process.poll() is None:
            child.process.kill()
        child.process.wait()

    async def restart_keyservice(self) -> None:
        """SIGTERM the key service, wait for it to exit, start it again.

        Raises:
            SoakSetupError: the new one does not get healthy.
        """
        if self.keyservice is not None:
            await asyncio.to_thread(_stop, self.keyservice.process)
        await self.start_keyservice()

    async def stop_keyservice(self) -> None:
        """SIGTERM the key service and wait for it to exit."""
        if self.keyservice is not None:
            await asyncio.to_thread(_stop, self.keyservice.process)

    def stop_all(self) -> None:
        """Stop every component (gateway first, key service last); never raises."""
        children = [c for c in (self.gateway, *self.encryptors, self.keyservice) if c is not None]
        for child in children:
            _stop(child.process)

    async def encryptor_metrics(self, client: httpx.AsyncClient) -> list[str]:
        """The Prometheus text of every live encryptor (a dead or busy one is skipped)."""
        texts = []
        for child in self.encryptors:
            if child.process.poll() is not None or child.metrics_port is None:
                continue
            try:
                response = await client.get(f"http://127.0.0.1:{child.metrics_port}/metrics", timeout=2)
            except httpx.HTTPError:
                continue
            texts.append(response.text)
        return texts

    def component_logs(self) -> list[Path]:
        """Every log file of every component incarnation."""
        return sorted(self.logs.glob("*.log"))


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


async def _wait_healthy(child: Child, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise SoakSetupError(f"{child.name} exited ({child.process.returncode}); see {child.log}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise SoakSetupError(f"{child.name} not healthy within {READY_TIMEOUT_S:.0f} s; see {child.log}")


async def _wait_logged(child: Child, text: str, offset: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise SoakSetupError(f"{child.name} exited ({child.process.returncode}); see {child.log}")
        with child.log.open("rb") as log:
            log.seek(offset)
            if text.encode() in log.read():
                return
        await asyncio.sleep(0.2)
    raise SoakSetupError(f"{child.name} not ready within {READY_TIMEOUT_S:.0f} s; see {child.log}")
