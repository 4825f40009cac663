"""`pulseseal services up|down|status`, run as a user runs it: a separate process, real servers.

Tests that would disturb the shared servers (stopping one, a port conflict) run a second instance in a
temporary PULSESEAL_HOME on spare ports instead (the scripts take PULSESEAL_*_PORT overrides).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from shell.soak.servers import spare_amqp_port
from tests.isolation import rabbitmqctl

PORT_VARIABLE = {
    "rabbitmq": "PULSESEAL_RABBITMQ_PORT",
    "redis": "PULSESEAL_KEYSTORE_REDIS_PORT",
    "mongo": "PULSESEAL_MONGO_PORT",
}
KIND = {"rabbitmq": "RabbitMQ", "redis": "Redis", "mongo": "a MongoDB-compatible server"}


def pulseseal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `pulseseal` command line in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-c", "from shell.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture
def spare_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment for a second, private instance: its own home and ports. Stops it afterwards."""
    env = {
        **os.environ,
        "PULSESEAL_HOME": str(tmp_path / "home"),
        "PULSESEAL_FERRETDB_DEBUG_ADDR": f"127.0.0.1:{spare_amqp_port(random.Random())}",
        "PULSESEAL_POSTGRES_PORT": str(spare_amqp_port(random.Random())),
        **{variable: str(spare_amqp_port(random.Random())) for variable in PORT_VARIABLE.values()},
    }
    yield env
    pulseseal("services", "down", env=env)


@pytest.mark.integration
def test_status_shows_all_three_ready(amqp_url: str, keystore_redis_url: str, mongo_url: str) -> None:
    result = pulseseal("services", "status")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name, port in (
        ("rabbitmq", urlsplit(amqp_url).port or 5672),
        ("redis", urlsplit(keystore_redis_url).port or 6380),
        ("mongo", urlsplit(mongo_url).port or 27017),
    ):
        line = next(line for line in lines if line.startswith(name))
        assert "ready" in line
        assert "not ready" not in line
        assert f"port {port}" in line


@pytest.mark.integration
def test_up_twice_the_second_is_a_quick_no_op(amqp_url: str, keystore_redis_url: str, mongo_url: str) -> None:
    first = pulseseal("services", "up")
    started = time.monotonic()
    second = pulseseal("services", "up")
    elapsed = time.monotonic() - started

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "credentials: present" in second.stdout
    for name in ("rabbitmq", "redis", "mongo"):
        line = next(line for line in second.stdout.splitlines() if line.startswith(f"{name}:"))
        assert "already running" in line or "not started by us" in line
    assert "starting" not in second.stdout
    assert elapsed < 15


@pytest.mark.parametrize("service", ["rabbitmq", "redis", "mongo"])
def test_port_taken_by_something_else_is_one_clear_line(spare_env: dict[str, str], service: str) -> None:
    with socket.socket() as squatter:  # accepts connections, never answers
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = pulseseal("services", "up", service, env={**spare_env, PORT_VARIABLE[service]: str(port)})

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"pulseseal: port 127.0.0.1:{port} is taken")
    assert f"which is not {KIND[service]}" in result.stderr
    assert PORT_VARIABLE[service] in result.stderr


def test_unknown_service_is_a_usage_error() -> None:
    result = pulseseal("services", "status", "postgres")

    assert result.returncode == 2
    assert result.stderr == (
        "pulseseal: unknown service 'postgres' — choose from rabbitmq, redis, mongo (or none for all three)\n"
    )


@pytest.mark.integration
@pytest.mark.parametrize("service", ["redis", "mongo", pytest.param("rabbitmq", marks=pytest.mark.slow)])
def test_one_service_up_status_down(spare_env: dict[str, str], service: str) -> None:
    home = Path(spare_env["PULSESEAL_HOME"])

    up = pulseseal("services", "up", service, env=spare_env)
    ready = pulseseal("services", "status", service, env=spare_env)
    down = pulseseal("services", "down", service, env=spare_env)
    after = pulseseal("services", "status", service, env=spare_env)
    again = pulseseal("services", "down", service, env=spare_env)

    assert up.returncode == 0, up.stderr
    assert f"{service}: ready" in up.stdout
    assert ready.returncode == 0, ready.stderr
    assert str(home) in ready.stdout
    assert down.returncode == 0, down.stderr
    assert f"{service}: stopped" in down.stdout
    assert after.returncode == 1
    assert "not ready" in after.stdout
    assert after.stderr == f"pulseseal: not ready: {service} — run: pulseseal services up\n"
    assert again.returncode == 0
    assert "nothing of ours to stop" in again.stdout
    assert (home / "credentials" / "callers.json").is_file()


@pytest.mark.integration
def test_rabbitmqctl_reaches_a_node_started_from_another_home(isolated_amqp_url: str, tmp_path: Path) -> None:
    # A second checkout (a CI clone) sharing the servers of the first: the node on the port is not of
    # this home, and `ctl` (which the tests use to make their virtual hosts) must still reach it.
    env = {
        **os.environ,
        "PULSESEAL_HOME": str(tmp_path / "another-home"),
        "PULSESEAL_RABBITMQ_PORT": str(urlsplit(isolated_amqp_url).port or 5672),
    }
    vhosts = rabbitmqctl("list_vhosts", env=env).split()
    assert unquote(urlsplit(isolated_amqp_url).path.lstrip("/")) in vhosts
    assert not (tmp_path / "another-home" / "rabbitmq").exists()  # nothing started or written there
