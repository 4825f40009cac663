"""A local RabbitMQ cluster as `pulseseal services up --rabbitmq-nodes N` runs it, for tests and the soak.

The nodes are those of infra/rabbitmq.sh: node I listens on `base_port + I - 1`, is named
`pulseseal-<port>@localhost` and keeps its data under `PULSESEAL_HOME/rabbitmq/` (node 1) or
`PULSESEAL_HOME/rabbitmq/nodes/<port>/`. This module starts and stops the cluster through the CLI (the
same code path as a user), asks it which node leads a queue, and kills a node outright (`kill -9`) to
inject the fault a crashed host is.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from shell.devservices import RabbitmqctlFailed, rabbitmqctl
from shell.processes import run


class ClusterError(Exception):
    """The cluster could not be started, stopped or asked (the message has the command's output)."""


@dataclass(frozen=True)
class RabbitCluster:
    """A local RabbitMQ cluster of `nodes` nodes on `base_port` and the ports after it, under `home`."""

    home: Path
    base_port: int
    nodes: int = 3
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)

    @property
    def env(self) -> dict[str, str]:
        """The environment the service scripts and `rabbitmqctl` need for this cluster."""
        return {
            **self.base_env,
            "PULSESEAL_HOME": str(self.home),
            "PULSESEAL_RABBITMQ_PORT": str(self.base_port),
        }

    @property
    def ports(self) -> list[int]:
        """Each node's AMQP port, node 1 first."""
        return [self.base_port + i for i in range(self.nodes)]

    def node_name(self, port: int) -> str:
        """The Erlang node name of the node on `port`."""
        return f"pulseseal-{port}@localhost"

    def port_of(self, node_name: str) -> int:
        """The AMQP port of the node named `node_name`.

        Raises:
            ClusterError: No node of this cluster has that name.
        """
        for port in self.ports:
            if self.node_name(port) == node_name:
                return port
        raise ClusterError(f"{node_name} is not a node of this cluster")

    def url(self, port: int, vhost: str = "/") -> str:
        """The AMQP URL of one node (guest, which RabbitMQ accepts from loopback only)."""
        return f"amqp://guest:guest@127.0.0.1:{port}/{quote(vhost, safe='')}"

    def urls(self, vhost: str = "/", *, first: int | None = None) -> str:
        """`PULSESEAL_AMQP_URL` for the whole cluster, starting with the node on port `first` if given."""
        ports = self.ports
        if first is not None:
            at = ports.index(first)
            ports = ports[at:] + ports[:at]
        return ",".join(self.url(port, vhost) for port in ports)

    def pidfile(self, port: int) -> Path:
        """Where the node on `port` writes its pid."""
        root = self.home / "rabbitmq"
        return (root if port == self.base_port else root / "nodes" / str(port)) / "rabbit.pid"

    def up(self, timeout_s: float = 300.0) -> None:
        """`pulseseal services up rabbitmq --rabbitmq-nodes N`: start what is not running, (re)join.

        Raises:
            ClusterError: The command failed.
        """
        self._services("up", "--rabbitmq-nodes", str(self.nodes), timeout_s=timeout_s)

    def down(self, timeout_s: float = 180.0) -> None:
        """`pulseseal services down rabbitmq`: stop every node.

        Raises:
            ClusterError: The command failed.
        """
        self._services("down", timeout_s=timeout_s)

    def ctl(self, *args: str) -> str:
        """`rabbitmqctl ARGS` against a running node of the cluster; its stdout.

        Raises:
            ClusterError: The command failed.
        """
        try:
            return rabbitmqctl(*args, env=self.env)
        except RabbitmqctlFailed as exc:
            raise ClusterError(str(exc)) from None

    def quorum_queues(self, vhost: str = "/") -> dict[str, tuple[str, list[str], list[str]]]:
        """Per queue of `vhost`: its leader, its members and the members online (node names).

        Raises:
            ClusterError: `rabbitmqctl` failed.
        """
        rows = json.loads(
            self.ctl("list_queues", "-p", vhost, "name", "leader", "members", "online", "--formatter", "json")
        )
        return {row["name"]: (row["leader"], list(row["members"]), list(row["online"])) for row in rows}

    def leader_port(self, queue: str, vhost: str = "/") -> int:
        """The AMQP port of the node that leads `queue`.

        Raises:
            ClusterError: The queue does not exist, or `rabbitmqctl` failed.
        """
        queues = self.quorum_queues(vhost)
        if queue not in queues:
            raise ClusterError(f"no queue {queue} in vhost {vhost}")
        return self.port_of(queues[queue][0])

    def pid(self, port: int) -> int | None:
        """The pid of the node on `port`, if it runs."""
        try:
            pid = int(self.pidfile(port).read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def kill(self, port: int, timeout_s: float = 10.0) -> None:
        """`kill -9` the node on `port` (a crashed host: no clean shutdown) and wait until it is gone.

        Raises:
            ClusterError: The node does not run, or outlived SIGKILL.
        """
        pid = self.pid(port)
        if pid is None:
            raise ClusterError(f"the node on port {port} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while self.pid(port) is not None:
            if time.monotonic() > deadline:
                raise ClusterError(f"the node on port {port} (pid {pid}) outlived SIGKILL")
            time.sleep(0.05)

    def _services(self, action: str, *options: str, timeout_s: float) -> None:
        result = run(["services", action, "rabbitmq", *options], env=self.env, timeout_s=timeout_s)
        if result.returncode != 0:
            raise ClusterError(
                f"services {action} rabbitmq {' '.join(options)} failed:\n{result.stdout}\n{result.stderr}"
            )
