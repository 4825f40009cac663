"""The soak in cluster mode, without servers: its schedule has the leader kill, its servers name every node."""

from __future__ import annotations

from pathlib import Path

from pulseseal.amqp_urls import split_urls
from shell.soak import cluster_faults
from shell.soak.faults import KINDS, PlannedFault, plan
from shell.soak.servers import Servers


def test_a_cluster_soak_schedules_the_leader_kill_and_a_single_node_one_does_not() -> None:
    kinds = KINDS + cluster_faults.KINDS
    assert {f.kind for f in plan(3, 60, encryptors=2, kinds=kinds)} == set(kinds)
    assert cluster_faults.LEADER_KILL not in {f.kind for f in plan(3, 600, encryptors=2)}
    assert "leading pulseseal.seal" in PlannedFault(1.0, cluster_faults.LEADER_KILL).describe()


def test_cluster_servers_give_every_node_to_the_components(tmp_path: Path) -> None:
    servers = Servers.allocate(tmp_path / "home", tmp_path / "log", rabbitmq_nodes=3)
    env = servers.env()
    assert env["PULSESEAL_RABBITMQ_NODES"] == "3"
    ports = [int(url.rsplit(":", 1)[1].rstrip("/")) for url in split_urls(env["PULSESEAL_AMQP_URL"])]
    assert ports == [servers.amqp_port, servers.amqp_port + 1, servers.amqp_port + 2]
    assert env["PULSESEAL_AMQP_URL"] == servers.amqp_url
    places = servers.data_places()["rabbitmq_data"]
    assert tmp_path / "home" / "rabbitmq" / "nodes" / str(servers.amqp_port + 2) / "mnesia" in places
    assert len(places) == 3


def test_single_node_servers_keep_one_url(tmp_path: Path) -> None:
    servers = Servers.allocate(tmp_path / "home", tmp_path / "log")
    assert split_urls(servers.amqp_url) == [f"amqp://guest:guest@127.0.0.1:{servers.amqp_port}/"]
    assert servers.data_places()["rabbitmq_data"] == [tmp_path / "home" / "rabbitmq" / "mnesia"]
