"""The soak's own RabbitMQ, key-store Redis and FerretDB: `infra/` scripts with a home and ports of their own.

Faults act on these servers only: `services down/up` through the scripts (SIGTERM, as an operator's
restart), SIGKILL of the Redis pid, SIGSTOP/SIGCONT of the FerretDB pid. Nobody else's data is touched.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from shell.devservices import infra_dir
from shell.processes import command, free_port, port_is_free

SERVER_TIMEOUT_S = 240


class SoakSetupError(Exception):
    """The soak could not set up or control its servers or components; the message says which."""


def spare_amqp_port(rng: random.Random, nodes: int = 1) -> int:
    """A free port whose +20000 neighbour (RabbitMQ's distribution port) is free too — and so are the
    `nodes - 1` ports after it and theirs, for a cluster.

    Raises:
        SoakSetupError: none found.
    """
    for _ in range(500):
        port = rng.randrange(20000, 45536 - nodes)
        if all(port_is_free(p) and port_is_free(p + 20000) for p in range(port, port + nodes)):
            return port
    raise SoakSetupError("no free port pair for a second RabbitMQ node")


@dataclass
class Servers:
    """The soak's servers: where their data lives and how to reach them."""

    home: Path
    amqp_port: int
    redis_port: int
    mongo_port: int
    ferret_debug_port: int
    log: Path
    postgres_port: int = field(default_factory=free_port)
    started: set[str] = field(default_factory=set)
    rabbitmq_nodes: int = 1  # 3: a cluster on amqp_port and the ports after it

    @classmethod
    def allocate(cls, home: Path, log: Path, rabbitmq_nodes: int = 1) -> Servers:
        """Pick spare ports for a new set of servers under `home`."""
        return cls(
            home=home,
            rabbitmq_nodes=rabbitmq_nodes,
            amqp_port=spare_amqp_port(random.Random(), rabbitmq_nodes),
            redis_port=free_port(),
            mongo_port=free_port(),
            ferret_debug_port=free_port(),
            log=log,
        )

    def env(self) -> dict[str, str]:
        """What the scripts and PulseSeal's components need to use these servers (no other PULSESEAL_*)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSESEAL_")}
        env.update(
            {
                "PULSESEAL_HOME": str(self.home),
                "PULSESEAL_PYTHON": sys.executable,
                "PULSESEAL_RABBITMQ_PORT": str(self.amqp_port),
                "PULSESEAL_KEYSTORE_REDIS_PORT": str(self.redis_port),
                "PULSESEAL_MONGO_PORT": str(self.mongo_port),
                "PULSESEAL_FERRETDB_DEBUG_ADDR": f"127.0.0.1:{self.ferret_debug_port}",
                "PULSESEAL_POSTGRES_PORT": str(self.postgres_port),
                "PULSESEAL_FERRETDB_POSTGRESQL_URL": f"postgresql://pulseseal@127.0.0.1:{self.postgres_port}/ferretdb",
                "PULSESEAL_AMQP_URL": self.amqp_url,
                "PULSESEAL_RABBITMQ_NODES": str(self.rabbitmq_nodes),
                "PULSESEAL_KEYSTORE_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "PULSESEAL_MONGO_URL": f"mongodb://127.0.0.1:{self.mongo_port}/",
                "PULSESEAL_SERVICES_TIMEOUT": "120",
            }
        )
        return env

    @property
    def amqp_url(self) -> str:
        """RabbitMQ's URL (one per node, comma-separated, for a cluster)."""
        ports = range(self.amqp_port, self.amqp_port + self.rabbitmq_nodes)
        return ",".join(f"amqp://guest:guest@127.0.0.1:{port}/" for port in ports)

    @property
    def mongo_url(self) -> str:
        """FerretDB's URL."""
        return f"mongodb://127.0.0.1:{self.mongo_port}/"

    @property
    def redis_url(self) -> str:
        """The key-store Redis URL with its password (made by the first `services up`) for our own client."""
        password_file = self.home / "credentials" / "keystore-redis.password"
        if not password_file.exists():
            return f"redis://127.0.0.1:{self.redis_port}/0"
        password = quote(password_file.read_text(encoding="ascii").strip(), safe="")
        return f"redis://:{password}@127.0.0.1:{self.redis_port}/0"

    def services(self, action: str, *names: str) -> None:
        """`pulseseal services <action> <names>` for these servers (credentials are made on first `up`).

        Raises:
            SoakSetupError: the command failed (its last lines are in the message).
        """
        argv = command(["services", action, *names])
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            result = subprocess.run(
                argv,
                env=self.env(),
                stdout=out,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                timeout=SERVER_TIMEOUT_S,
                check=False,
            )
        if result.returncode != 0:
            why = result.stderr.decode(errors="replace").strip().splitlines()
            raise SoakSetupError(f"services {action} {' '.join(names)} failed: {why[-1] if why else '?'}")
        if action == "up":
            self.started.update(names or ("rabbitmq", "redis", "mongo"))

    def pid(self, name: str) -> int:
        """The pid of one of our servers, from its pid file.

        Raises:
            SoakSetupError: no pid file (the server is not running).
        """
        files = {
            "redis": self.home / "keystore-redis" / "redis.pid",
            "mongo": self.home / "ferretdb" / "ferretdb.pid",
            "rabbitmq": self.home / "rabbitmq" / "rabbit.pid",
        }
        try:
            return int(files[name].read_text().strip())
        except (OSError, ValueError):
            raise SoakSetupError(f"no pid file for the soak's {name}") from None

    def signal(self, name: str, signum: signal.Signals) -> None:
        """Send `signum` to one of our servers.

        Raises:
            SoakSetupError: it is not running.
        """
        try:
            os.kill(self.pid(name), signum)
        except ProcessLookupError:
            raise SoakSetupError(f"the soak's {name} is not running") from None

    def stop_all(self) -> None:
        """Stop every server this soak started; never raises (it runs on the way out)."""
        mongo_pid = None
        try:
            mongo_pid = self.pid("mongo")
            os.kill(mongo_pid, signal.SIGCONT)  # a paused FerretDB cannot act on SIGTERM
        except (SoakSetupError, OSError):
            pass
        for name in ("mongo", "redis", "rabbitmq"):
            try:
                self.services("down", name)
            except (SoakSetupError, subprocess.TimeoutExpired):
                continue

    def data_places(self) -> dict[str, list[Path]]:
        """Where each server keeps its data on disk (for the plaintext hunt)."""
        return {
            "mongodb_data": [
                self.home / "ferretdb" / "data",
                self.home / "ferretdb" / "state",
                self.home / "postgres" / "data",  # FerretDB's PostgreSQL backend (the default)
            ],
            "keystore_redis": [self.home / "keystore-redis"],
            "rabbitmq_data": [self.home / "rabbitmq" / "mnesia", *self._extra_nodes("mnesia")],
        }

    def log_places(self) -> list[Path]:
        """The servers' own logs."""
        return [
            self.home / "logs",
            self.home / "rabbitmq" / "log",
            *self._extra_nodes("log"),
            self.home / "ferretdb" / "ferretdb.log",
            self.home / "postgres" / "postgres.log",
        ]

    @property
    def infra(self) -> Path:
        """The service scripts in use."""
        return infra_dir()

    def _extra_nodes(self, name: str) -> list[Path]:
        # A cluster's nodes 2..N keep their data and logs under rabbitmq/nodes/<port>/ (infra/README.md).
        ports = range(self.amqp_port + 1, self.amqp_port + self.rabbitmq_nodes)
        return [self.home / "rabbitmq" / "nodes" / str(port) / name for port in ports]
