"""Shared fixtures. Tests that need a server ask for its URL fixture, which FAILS (never skips) when the
server does not answer: a missing server is a broken test setup, not a reason to pass (house style 10)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pymongo import MongoClient

from keyservice.bootstrap import authenticated_url
from pulseseal.ferretdb_sql import PostgresTarget, postgres_target
from pulseseal.settings import Settings, load_settings
from tests.isolation import create_vhost, delete_keys, delete_vhost, session_tag, vhost_url
from tests.processes import Component, free_port, start, start_encryptor, wait_healthy


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The settings the tests run with (the environment's, like every component's)."""
    return load_settings()


def require_server(name: str, url: str, default_port: int) -> str:
    """`url` when its server accepts TCP connections; otherwise fail the test with what to do."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        answering = False
    else:
        answering = True
    if not answering:  # failed outside the `except`, so the report is the one line, not a chained error
        pytest.fail(
            f"{name} is not answering on {host}:{port} — run `pulseseal services up` (make test does)",
            pytrace=False,
        )
    return url


@pytest.fixture(scope="session")
def amqp_url(settings: Settings) -> str:
    """RabbitMQ's URL, once it answers."""
    return require_server("RabbitMQ", settings.amqp_url, 5672)


@pytest.fixture(scope="session")
def keystore_redis_url(settings: Settings) -> str:
    """The key-store Redis URL with its password in it (contract §2), once it answers."""
    require_server("The key-store Redis", settings.keystore_redis_url, 6380)
    return authenticated_url(settings)


@pytest.fixture(scope="session")
def mongo_url(settings: Settings) -> str:
    """The MongoDB-compatible server's URL, once it answers."""
    return require_server("The MongoDB-compatible server", settings.mongo_url, 27017)


@pytest.fixture(scope="session")
def ferretdb_postgresql(settings: Settings) -> PostgresTarget | None:
    """FerretDB's PostgreSQL, where `mongo.ensure_indexes` makes the GIN indexes (None on SQLite)."""
    return postgres_target(settings)


@pytest.fixture(scope="session")
def isolated_amqp_url(amqp_url: str) -> Iterator[str]:
    """RabbitMQ's URL on a virtual host of this test session's own, deleted afterwards.

    Tests use the contract's exchange and queue names; the vhost keeps two sessions (or a session and a
    running demo) from taking each other's messages.
    """
    vhost = f"pulseseal-test-{session_tag()}"
    create_vhost(vhost)
    try:
        yield vhost_url(amqp_url, vhost)
    finally:
        delete_vhost(vhost)


@pytest.fixture(scope="session")
def mongo_db(mongo_url: str) -> Iterator[str]:
    """A database name of this test session's own, dropped afterwards."""
    name = f"pulseseal_test_{session_tag()}"
    yield name
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture(scope="session")
def pipeline_env(
    isolated_amqp_url: str,
    mongo_db: str,
    keystore_redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """Environment for PulseSeal processes of this session: own vhost, database, key-store prefix,
    shred ledger and ports. Key-store entries under the prefix are deleted afterwards."""
    tag = session_tag()
    keyservice_port, gateway_port = free_port(), free_port()
    prefix = f"pulseseal:test:{tag}:"
    env = {
        "PULSESEAL_AMQP_URL": isolated_amqp_url,
        "PULSESEAL_MONGO_DB": mongo_db,
        "PULSESEAL_KEYSTORE_PREFIX": prefix,
        "PULSESEAL_SHRED_LEDGER_FILE": str(tmp_path_factory.mktemp("ledger") / "shred-ledger.ndjson"),
        "PULSESEAL_KEYSERVICE_PORT": str(keyservice_port),
        "PULSESEAL_KEYSERVICE_URL": f"http://127.0.0.1:{keyservice_port}",
        "PULSESEAL_GATEWAY_PORT": str(gateway_port),
        "PULSESEAL_GATEWAY_URL": f"http://127.0.0.1:{gateway_port}",
        "PULSESEAL_ENCRYPTOR_METRICS_PORT": "0",
        "PULSESEAL_BATCH_MAX_MS": "20",
    }
    yield env
    delete_keys(keystore_redis_url, prefix)


@pytest.fixture(scope="session")
def keyservice_process(
    pipeline_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Component]:
    """A real `pulseseal keyservice` for this session, healthy."""
    component = start("keyservice", ["keyservice"], pipeline_env, tmp_path_factory.mktemp("logs"))
    try:
        wait_healthy(component, pipeline_env["PULSESEAL_KEYSERVICE_URL"] + "/healthz")
        yield component
    finally:
        component.stop()


@pytest.fixture
def encryptors(pipeline_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], Component]]:
    """Start encryptor processes on demand; all are stopped at the end."""
    started: list[Component] = []

    def launch() -> Component:
        component = start_encryptor(pipeline_env, tmp_path)
        started.append(component)
        return component

    yield launch
    for component in started:
        component.stop()
