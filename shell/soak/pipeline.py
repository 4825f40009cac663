"""The soak's PulseSeal processes: the key service (one, or several replicas on one key store),
encryptors, one gateway — started, killed, restarted.

Each runs as `python -m shell <command>` (`shell/processes.py`) with the soak's environment and a log file of its own (every
incarnation appends to its component's log, so the plaintext hunt sees all of them).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from shell.processes import Child, StartFailed, free_port, spawn, spawn_encryptor, stop_all
from shell.soak.servers import SoakSetupError

T = TypeVar("T")

READY_TIMEOUT_S = 60.0


@dataclass
class Pipeline:
    """The components of one soak run."""

    env: dict[str, str]
    logs: Path
    encryptors: list[Child] = field(default_factory=list)
    metrics_ports: list[int | None] = field(default_factory=list)
    """Each encryptor's metrics port, once it is ready."""
    gateway: Child | None = None
    keyservices: list[Child | None] = field(default_factory=list)
    """One per key-service replica (None before its first start)."""

    @property
    def keyservice(self) -> Child | None:
        """The (first) key-service process."""
        return self.keyservices[0] if self.keyservices else None

    @property
    def keyservice_url(self) -> str:
        """Where the key service answers: its URL, or its replicas' URLs comma-separated (as callers get it)."""
        return self.env["PULSESEAL_KEYSERVICE_URL"]

    @property
    def keyservice_urls(self) -> list[str]:
        """Each key-service replica's URL."""
        return self.keyservice_url.split(",")

    @property
    def gateway_url(self) -> str:
        """Where the gateway answers."""
        return self.env["PULSESEAL_GATEWAY_URL"]

    @classmethod
    def configure(
        cls, base_env: dict[str, str], logs: Path, mongo_db: str, *, keyservice_replicas: int = 1
    ) -> Pipeline:
        """Ports and settings for the components on top of the servers' environment (`keyservice_replicas`
        key services on ports of their own; every caller gets all their URLs)."""
        keyservice_ports = [free_port() for _ in range(keyservice_replicas)]
        gateway_port = free_port()
        env = dict(base_env)
        env.update(
            {
                "PULSESEAL_MONGO_DB": mongo_db,
                "PULSESEAL_KEYSERVICE_PORT": str(keyservice_ports[0]),
                "PULSESEAL_KEYSERVICE_URL": ",".join(f"http://127.0.0.1:{p}" for p in keyservice_ports),
                "PULSESEAL_GATEWAY_PORT": str(gateway_port),
                "PULSESEAL_GATEWAY_URL": f"http://127.0.0.1:{gateway_port}",
                "PULSESEAL_IMPORT_RETRY_S": "30",
                "PULSESEAL_BATCH_MAX_MS": "50",
            }
        )
        return cls(env, logs, keyservices=[None] * keyservice_replicas)

    async def start_keyservice(self) -> None:
        """Start the key service (every replica) and wait until it is healthy.

        Raises:
            SoakSetupError: it exited or did not get healthy in time.
        """
        for replica in range(len(self.keyservices)):
            await self.start_keyservice_replica(replica)

    async def start_keyservice_replica(self, replica: int) -> None:
        """Start key-service replica `replica` (0-based) on its port and wait until it is healthy.

        Raises:
            SoakSetupError: it exited or did not get healthy in time.
        """
        url = self.keyservice_urls[replica]
        name = "keyservice" if len(self.keyservices) == 1 else f"keyservice-{replica + 1}"
        env = {**self.env, "PULSESEAL_KEYSERVICE_PORT": url.rsplit(":", 1)[1]}
        child = spawn(name, ["keyservice"], env=env, log=self.logs / f"{name}.log")
        self.keyservices[replica] = child
        await _ready(child.wait_ready_async(url + "/healthz", READY_TIMEOUT_S))

    def kill_keyservice_replica(self, replica: int) -> None:
        """SIGKILL one key-service replica: no shutdown of any kind, like a crashed host."""
        child = self.keyservices[replica]
        if child is not None:
            child.kill()

    async def start_gateway(self) -> None:
        """Start the gateway and wait until it is healthy.

        Raises:
            SoakSetupError: it exited or did not get healthy in time.
        """
        self.gateway = spawn("gateway", ["gateway"], env=self.env, log=self.logs / "gateway.log")
        await _ready(self.gateway.wait_ready_async(self.gateway_url + "/healthz", READY_TIMEOUT_S))

    async def start_encryptor(self, slot: int) -> None:
        """Start an encryptor in `slot` (replacing a dead one) and wait until its `/readyz` answers 200.

        Raises:
            SoakSetupError: it exited or did not get ready in time.
        """
        name = f"encryptor-{slot}"
        child = spawn_encryptor(name, self.logs / "run", env=self.env, log=self.logs / f"{name}.log")
        if slot < len(self.encryptors):
            self.encryptors[slot] = child
            self.metrics_ports[slot] = None
        else:
            self.encryptors.append(child)
            self.metrics_ports.append(None)
        self.metrics_ports[slot] = await _ready(child.wait_encryptor_ready_async(READY_TIMEOUT_S))

    def kill_encryptor(self, slot: int) -> None:
        """SIGKILL one encryptor: no draining, no acks, like a crashed host."""
        self.encryptors[slot].kill()

    async def restart_keyservice(self) -> None:
        """SIGTERM the key service, wait for it to exit, start it again.

        Raises:
            SoakSetupError: the new one does not get healthy.
        """
        await self.stop_keyservice()
        await self.start_keyservice()

    async def stop_keyservice(self) -> None:
        """SIGTERM the key service (every replica) and wait for it to exit."""
        for child in self.keyservices:
            if child is not None:
                await child.stop_async()

    def stop_all(self) -> None:
        """Stop every component (gateway first, key service last); never raises."""
        # In reverse: gateway, encryptors, key service.
        stop_all([c for c in (*self.keyservices, *self.encryptors, self.gateway) if c is not None])

    async def encryptor_metrics(self, client: httpx.AsyncClient) -> list[str]:
        """The Prometheus text of every live encryptor (a dead or busy one is skipped)."""
        texts = []
        for child, port in zip(self.encryptors, self.metrics_ports, strict=True):
            if not child.running() or port is None:
                continue
            try:
                response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
            except httpx.HTTPError:
                continue
            texts.append(response.text)
        return texts

    def component_logs(self) -> list[Path]:
        """Every log file of every component incarnation."""
        return sorted(self.logs.glob("*.log"))


async def _ready(waiting: Awaitable[T]) -> T:
    """Await a readiness wait, as the soak's own error.

    Raises:
        SoakSetupError: the component exited or did not get ready in time (the message names its log).
    """
    try:
        return await waiting
    except StartFailed as exc:
        raise SoakSetupError(str(exc)) from None
