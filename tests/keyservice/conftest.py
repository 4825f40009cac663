"""Key-service fixtures: a unique Redis key prefix per test on the real key-store Redis (removed at the
end of the session), throwaway credentials, a ready service, and clients talking to it over ASGI."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from keyservice.app import create_app
from keyservice.bootstrap import ServiceOptions, open_service
from keyservice.client import KeyServiceClient
from keyservice.service import KeyService
from keyservice.store import KeyStore
from keyservice.wrapping import MasterKey
from tests.isolation import delete_keys
from tests.keyservice.helpers import Credentials, make_credentials

SESSION_PREFIX = f"pulseseal-test:{secrets.token_hex(4)}:"


@pytest.fixture(scope="session")
def redis_url(keystore_redis_url: str) -> Iterator[str]:
    """The real key-store Redis; every key this session wrote is deleted at the end."""
    yield keystore_redis_url
    delete_keys(keystore_redis_url, SESSION_PREFIX)


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"{SESSION_PREFIX}{secrets.token_hex(4)}:"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the key-store Redis."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def master() -> MasterKey:
    """A random master key."""
    return MasterKey(os.urandom(32))


@pytest.fixture
async def store(redis: Redis, prefix: str, master: MasterKey) -> KeyStore:
    """A key store on this test's prefix, under `master`."""
    store = KeyStore(redis, master, prefix=prefix)
    await store.check_master()
    return store


@pytest.fixture
def creds(tmp_path: Path) -> Credentials:
    """Fresh credentials for every role."""
    return make_credentials(tmp_path / "credentials")


@pytest.fixture
def options(creds: Credentials, redis_url: str, prefix: str, tmp_path: Path) -> ServiceOptions:
    """Options of a key service on this test's prefix."""
    return ServiceOptions(
        redis_url=redis_url,
        prefix=prefix,
        master=MasterKey.from_base64(creds.master_b64),
        callers_file=creds.callers_file,
        signing_key_file=creds.signing_key_file,
        ledger_file=tmp_path / "keyservice" / "shred-ledger.ndjson",
        key_ttl_s=60,
        allow_volatile=False,
    )


@pytest.fixture
async def service(options: ServiceOptions) -> AsyncIterator[KeyService]:
    """A ready key service."""
    opened = await open_service(options)
    opened.refusals.window_s = 3600  # counted refusals are written when a test flushes them, not by a timer
    yield opened
    await opened.close()


@pytest.fixture
async def http(service: KeyService) -> AsyncIterator[httpx.AsyncClient]:
    """Raw HTTP to the service over ASGI, from 127.0.0.1."""
    transport = httpx.ASGITransport(app=create_app(service), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
async def make_client(
    service: KeyService, creds: Credentials
) -> AsyncIterator[Callable[..., KeyServiceClient]]:
    """Build `KeyServiceClient`s for a role, over ASGI; all closed at the end."""
    made: list[KeyServiceClient] = []
    app = create_app(service)

    def build(role: str, **kwargs: object) -> KeyServiceClient:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40001))
        client = KeyServiceClient(
            "http://127.0.0.1",
            role,
            creds.keys[role],
            transport=transport,
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(client)
        return client

    yield build
    for client in made:
        await client.aclose()
