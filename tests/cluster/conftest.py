"""A 3-node RabbitMQ cluster of this test session's own, on loopback ports 5682-5684.

Started through `pulseseal services up rabbitmq --rabbitmq-nodes 3` (the user's code path) with a
PULSESEAL_HOME under the session's temporary directory, and stopped at the end. It never touches the
shared single node on 5672. `PULSESEAL_TEST_CLUSTER_PORT` moves it (two sessions on one machine).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from shell.rabbitmq_cluster import ClusterError, RabbitCluster

CLUSTER_PORT = int(os.environ.get("PULSESEAL_TEST_CLUSTER_PORT", "5682"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """A running 3-node cluster, all nodes joined; stopped (every node) afterwards."""
    env = {k: v for k, v in os.environ.items() if k not in ("PULSESEAL_AMQP_URL", "PULSESEAL_RABBITMQ_NODES")}
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbitmq-cluster"), CLUSTER_PORT, 3, env)
    try:
        cluster.up()
    except ClusterError as exc:
        with contextlib.suppress(ClusterError):
            cluster.down()  # whatever did start
        pytest.fail(f"the test cluster did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.down()
