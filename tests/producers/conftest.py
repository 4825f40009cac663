"""Producer fixtures: this session's own RabbitMQ vhost, emptied queues per test, an in-process gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from producers.gateway.app import create_app
from producers.gateway.auth import TokenVerifier
from producers.gateway.service import EventIntake
from producers.publisher import Publisher
from tests.isolation import create_vhost, delete_keys, delete_vhost, session_tag, vhost_url
from tests.processes import free_port, start, wait_healthy
from tests.producers.helpers import AUDIENCE, DELIVERY_LIMIT, SECRET, purge
from tests.transit import LocalSealer


@pytest.fixture(scope="session")
def producers_amqp_url(amqp_url: str) -> Iterator[str]:
    """RabbitMQ on a virtual host of the producer tests' own, deleted at the end of the session.

    Tests use the contract's names; the vhost keeps other sessions (and the encryptor's tests) from
    taking these messages, or these tests from seeing theirs.
    """
    vhost = f"pulseseal-producers-{session_tag()}"
    try:
        create_vhost(vhost)
    except RuntimeError as exc:
        pytest.fail(f"cannot create a RabbitMQ vhost for the tests: {exc}", pytrace=False)
    try:
        yield vhost_url(amqp_url, vhost)
    finally:
        delete_vhost(vhost)


@pytest.fixture(scope="session")
def keyservice(keystore_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real key service of the producer tests' own, which producers fetch the transport
    public key from (open what they published with `tests.transit.keyservice_keys`).

    Not the root conftest's `keyservice_process`: that one stands on `isolated_amqp_url`, which must
    not be first built here, where `amqp_url` names the producers' vhost.
    """
    port = free_port()
    prefix = f"pulseseal:test:{session_tag()}:producers:"
    env = {
        "PULSESEAL_KEYSTORE_PREFIX": prefix,
        "PULSESEAL_SHRED_LEDGER_FILE": str(tmp_path_factory.mktemp("ledger") / "shred-ledger.ndjson"),
        "PULSESEAL_KEYSERVICE_PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}"
    component = start("keyservice", ["keyservice"], env, tmp_path_factory.mktemp("keyservice-logs"))
    try:
        wait_healthy(component, url + "/healthz")
        yield url
    finally:
        component.stop()
        delete_keys(keystore_redis_url, prefix)


@pytest.fixture
async def broker(producers_amqp_url: str) -> str:
    """The session vhost's URL, with `pulseseal.seal` and `pulseseal.dead` empty."""
    await purge(producers_amqp_url)
    return producers_amqp_url


@pytest.fixture
def verifier() -> TokenVerifier:
    """Verifies HS256 tokens signed with the test secret."""
    return TokenVerifier(secret=SECRET, jwks=None, audience=AUDIENCE)


@pytest.fixture
async def publisher(broker: str) -> AsyncIterator[Publisher]:
    """A connected publisher on the test vhost."""
    publisher = Publisher(broker, sealer=LocalSealer(), delivery_limit=DELIVERY_LIMIT, confirm_timeout_s=5.0)
    await publisher.connect()
    yield publisher
    await publisher.close()


@pytest.fixture
async def gateway(verifier: TokenVerifier, publisher: Publisher) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of an in-process gateway publishing to the test vhost."""
    intake = EventIntake(verifier, publisher, body_timeout_s=5.0, confirm_timeout_s=5.0)
    transport = httpx.ASGITransport(app=create_app(intake))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        yield client
