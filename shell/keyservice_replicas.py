"""Several key-service processes side by side on one machine (`pulseseal run --keyservice-replicas N`, the
soak): consecutive ports from the first, and the URL list every caller is given.

The replicas need nothing of their own: they share the key store (keys, shred ledger and notices, used
token ids, audit), so each is `pulseseal keyservice` with the same environment and another port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_REPLICAS = 16


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    """Where each replica listens and how callers reach it."""

    ports: tuple[int, ...]
    urls: tuple[str, ...]

    @property
    def keyservice_url(self) -> str:
        """The `PULSESEAL_KEYSERVICE_URL` for every caller: the replicas' URLs, comma-separated."""
        return ",".join(self.urls)

    def env(self, index: int, environ: Mapping[str, str]) -> dict[str, str]:
        """The environment of replica `index` (0-based): `environ` with its port."""
        return {**environ, "PULSESEAL_KEYSERVICE_PORT": str(self.ports[index])}


def plan_replicas(count: int, first_url: str, first_port: int) -> ReplicaPlan:
    """`count` replicas on `first_port`, `first_port + 1`, ..., reached with `first_url`'s scheme and host.

    Raises:
        ValueError: `count` is not 1 to `MAX_REPLICAS`, or the ports run past 65535.
    """
    if not 1 <= count <= MAX_REPLICAS:
        raise ValueError(f"key-service replicas must be 1 to {MAX_REPLICAS}, got {count}")
    if first_port + count - 1 > 65535:
        raise ValueError(f"{count} key-service replicas from port {first_port} run past port 65535")
    parts = urlsplit(first_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    ports = tuple(first_port + i for i in range(count))
    return ReplicaPlan(ports, tuple(f"{parts.scheme}://{host}:{port}" for port in ports))
