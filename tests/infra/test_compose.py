"""infra/compose.yaml: the container stack offers the same three servers, ports and AOF settings."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "infra" / "compose.yaml"


def _compose_config() -> dict[str, Any]:
    """The stack as Docker Compose resolves it when the plugin works, else the file parsed as YAML."""
    docker = shutil.which("docker")
    if docker is not None:
        result = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode == 0:
            config: dict[str, Any] = json.loads(result.stdout)
            return config
    parsed: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return parsed


def _published(service: dict[str, Any]) -> set[tuple[str, int, int]]:
    """(host ip, host port, container port) of every published port, short or long syntax."""
    out: set[tuple[str, int, int]] = set()
    for port in service["ports"]:
        if isinstance(port, str):
            ip, host, container = port.rsplit(":", 2)
            out.add((ip, int(host), int(container)))
        else:
            out.add((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
    return out


def test_three_servers_on_the_local_ports_and_loopback_only() -> None:
    services = _compose_config()["services"]

    assert set(services) == {"rabbitmq", "keystore-redis", "mongo", "mongo-2", "mongo-3", "mongo-init"}
    assert _published(services["rabbitmq"]) == {("127.0.0.1", 5672, 5672)}
    assert _published(services["keystore-redis"]) == {("127.0.0.1", 6380, 6380)}


def test_mongodb_is_a_three_member_replica_set_on_loopback() -> None:
    services = _compose_config()["services"]
    members = {"mongo": "27017", "mongo-2": "27018", "mongo-3": "27019"}

    for name, port in members.items():
        command = services[name]["command"]
        assert services[name]["network_mode"] == "host"
        assert command[command.index("--replSet") + 1] == "rs0"
        assert command[command.index("--bind_ip") + 1] == "127.0.0.1"
        assert command[command.index("--port") + 1] == port
    initiate = " ".join(services["mongo-init"]["command"])
    for port in members.values():
        assert f'host: "127.0.0.1:{port}"' in initiate
    assert set(services["mongo-init"]["depends_on"]) == set(members)


def test_images_are_the_documented_ones() -> None:
    services = _compose_config()["services"]

    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.13")
    assert services["keystore-redis"]["image"].startswith("redis:7")
    assert services["mongo"]["image"].startswith("mongo:7")


def test_keystore_redis_is_durable() -> None:
    command = _compose_config()["services"]["keystore-redis"]["command"]
    args = (command if isinstance(command, str) else " ".join(command)).split()

    def value(flag: str) -> str:
        return str(args[args.index(flag) + 1])

    assert value("--appendonly") == "yes"
    assert value("--appendfsync") in {"everysec", "always"}
    assert value("--port") == "6380"


def test_keystore_redis_takes_no_snapshots() -> None:
    """A `dump.rdb` would keep shredded keys (contract §6)."""
    command = _compose_config()["services"]["keystore-redis"]["command"]
    # The command is a shell line (the password reaches Redis on stdin): `--save ""` must be in it.
    assert '--save ""' in " ".join(command)


def test_keystore_redis_requires_the_dev_password_from_a_secret() -> None:
    config = _compose_config()
    service = config["services"]["keystore-redis"]
    command = service["command"] if isinstance(service["command"], str) else " ".join(service["command"])
    # The default user's password as an ACL password (`requirepass` would be shown by CONFIG GET to the key
    # service's own user), and that user restricted (docs/keyservice.md, "The key store's users").
    assert "user default on >%s" in command
    assert "requirepass" not in command
    assert "user pulseseal-keyservice on >%s ~pulseseal:* resetchannels +@all -@dangerous" in command
    assert "/run/secrets/keystore-redis-password" in command
    assert "/run/secrets/keystore-redis-keyservice-password" in command
    assert "redis-server -" in command  # the passwords reach Redis on stdin, not as arguments
    secret = config["secrets"]["keystore-redis-password"]["file"]
    assert str(secret).endswith("credentials/keystore-redis.password")
    own = config["secrets"]["keystore-redis-keyservice-password"]["file"]
    assert str(own).endswith("credentials/keystore-redis-keyservice.password")
    assert "REDISCLI_AUTH" in " ".join(service["healthcheck"]["test"])
