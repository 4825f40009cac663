"""The soak's RabbitMQ cluster fault: kill -9 the node that leads `pulseseal.seal`, then restart it.

Only with `pulseseal soak --rabbitmq-nodes 3`. The fault is the kill: recovery is measured while the node
is down (the producers and encryptors fail over to the live nodes, the queue elects a new leader), and
only then is the node started again (`services up`, which restarts it and checks it rejoined) — before
the next fault, so each measurement is about one fault.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pulseseal.topology import SEAL_QUEUE
from shell.rabbitmq_cluster import RabbitCluster
from shell.soak.servers import Servers, SoakSetupError

LEADER_KILL = "rabbitmq_leader_kill"
KINDS = (LEADER_KILL,)


def cluster_of(servers: Servers) -> RabbitCluster:
    """The soak's RabbitMQ nodes as a cluster (`servers.rabbitmq_nodes` of them)."""
    return RabbitCluster(servers.home, servers.amqp_port, servers.rabbitmq_nodes, servers.env())


async def kill_seal_leader(servers: Servers, say: Callable[[str], None]) -> Callable[[], Awaitable[None]]:
    """SIGKILL the node leading `pulseseal.seal`; returns what restarts it (run once recovered).

    Raises:
        SoakSetupError: The soak runs one node, or the leader could not be found or killed.
    """
    if servers.rabbitmq_nodes < 2:
        raise SoakSetupError("the leader-kill fault needs a RabbitMQ cluster (--rabbitmq-nodes 3)")
    cluster = cluster_of(servers)
    try:
        port = await asyncio.to_thread(cluster.leader_port, SEAL_QUEUE)
        await asyncio.to_thread(cluster.kill, port)
    except Exception as exc:  # noqa: BLE001 - ClusterError or a hung rabbitmqctl: one line for the report
        raise SoakSetupError(f"cannot kill the leader of {SEAL_QUEUE}: {exc}") from None
    node = cluster.node_name(port)
    say(f"           killed {node} (leader of {SEAL_QUEUE})")

    async def restart() -> None:
        started = time.monotonic()
        await asyncio.to_thread(servers.services, "up", "rabbitmq")
        _, members, online = (await asyncio.to_thread(cluster.quorum_queues))[SEAL_QUEUE]
        if node not in members or node not in online:
            raise SoakSetupError(f"{node} restarted but is not back in {SEAL_QUEUE}")
        say(f"           {node} restarted and rejoined in {time.monotonic() - started:.1f} s")

    return restart
