"""The client library against the real service (over ASGI): one request for many users, TTL-bounded cache,
single-flight, retries with backoff, and specific exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from keyservice.app import create_app
from keyservice.bootstrap import ServiceOptions, open_service
from keyservice.client import KeyServiceClient
from keyservice.client.tokens import CredentialError
from keyservice.receipts import verify_receipt
from keyservice.service import KeyService
from keyservice.wire.errors import (
    CallerNotAllowed,
    KeyServiceUnavailable,
    KeyShredded,
    KeyUnknown,
    RequestInvalid,
    TokenRejected,
    UserNotShredded,
)
from pulseseal.envelope import DataKey
from pulseseal.settings import Settings
from tests.keyservice.helpers import Credentials

pytestmark = pytest.mark.integration
MakeClient = Callable[..., KeyServiceClient]


async def test_one_request_for_a_thousand_users(make_client: MakeClient) -> None:
    client = make_client("encryptor")
    users = [f"bulk-{n}" for n in range(1000)]
    grant = await client.encrypt_keys(users)
    assert client.requests_sent == 1
    assert list(grant.keys) == users
    assert grant.refused == {}
    assert all(isinstance(k, DataKey) and k.version == 1 for k in grant.keys.values())
    await client.encrypt_keys(users)
    assert client.requests_sent == 1  # all cached


async def test_more_than_a_thousand_users_are_split(make_client: MakeClient) -> None:
    client = make_client("encryptor")
    grant = await client.encrypt_keys(f"split-{n}" for n in range(2500))
    assert len(grant.keys) == 2500
    assert client.requests_sent == 3


async def test_concurrent_misses_make_one_request(make_client: MakeClient) -> None:
    client = make_client("encryptor")
    keys = await asyncio.gather(*(client.current_key("popular") for _ in range(100)))
    assert client.requests_sent == 1
    assert all(k is keys[0] for k in keys)


async def test_keys_are_not_kept_past_expires_in(options: ServiceOptions, creds: Credentials) -> None:
    service = await open_service(replace(options, key_ttl_s=1))
    transport = httpx.ASGITransport(app=create_app(service))
    async with KeyServiceClient(
        "http://127.0.0.1", "encryptor", creds.keys["encryptor"], transport=transport
    ) as client:
        key = await client.current_key("short-lived")
        await client.current_key("short-lived")
        assert client.requests_sent == 1
        await asyncio.sleep(1.05)
        assert key.expired()
        await client.current_key("short-lived")
        assert client.requests_sent == 2
    await service.close()


async def test_cache_is_bounded(make_client: MakeClient) -> None:
    client = make_client("encryptor", cache_size=10)
    await client.encrypt_keys(f"lru-{n}" for n in range(20))
    await client.encrypt_keys(f"lru-{n}" for n in range(10, 20))
    assert client.requests_sent == 1
    await client.encrypt_keys(["lru-0"])
    assert client.requests_sent == 2


async def test_use_cache_false_always_asks(make_client: MakeClient) -> None:
    client = make_client("encryptor")
    await client.encrypt_keys(["fresh"], use_cache=False)
    await client.encrypt_keys(["fresh"], use_cache=False)
    assert client.requests_sent == 2


async def test_decrypt_and_specific_exceptions(make_client: MakeClient, service: KeyService) -> None:
    encryptor, auditor, admin = make_client("encryptor"), make_client("auditor"), make_client("admin")
    v1 = await encryptor.current_key("zoe")
    assert await admin.rotate("zoe") == 2
    grant = await auditor.decrypt_keys([("zoe", 1), ("zoe", 2), ("zoe", 5)], purpose="support ticket 7")
    assert sorted(grant.keys) == [("zoe", 1), ("zoe", 2)]
    assert grant.missing == {("zoe", 5): "unknown"}
    assert grant.keys[("zoe", 1)].version == v1.version
    with pytest.raises(KeyUnknown):
        await auditor.key_version("zoe", 9, purpose="p")
    receipt = await admin.shred("zoe")
    verify_receipt(receipt.model_dump(), service.signing_key.public_key())
    assert receipt.versions_destroyed == [1, 2]
    with pytest.raises(KeyShredded):
        await make_client("encryptor").current_key("zoe")
    with pytest.raises(KeyShredded):
        await make_client("auditor").key_version("zoe", 1, purpose="p")
    with pytest.raises(KeyShredded):
        await admin.rotate("zoe")
    assert await admin.reinstate("zoe") == 3
    with pytest.raises(UserNotShredded):
        await admin.reinstate("zoe")
    with pytest.raises(CallerNotAllowed):
        await encryptor.decrypt_keys([("zoe", 3)], purpose="p")
    with pytest.raises(CallerNotAllowed):
        await make_client("gateway").current_key("zoe")
    with pytest.raises(RequestInvalid):
        await encryptor.encrypt_keys(["not valid!"])
    records = await admin.audit(user_id="zoe")
    assert [(r.action, r.outcome) for r in records][:3] == [
        ("encrypt", "granted"),
        ("rotate", "granted"),
        ("decrypt", "granted"),
    ]
    assert any(r.purpose == "support ticket 7" for r in records)


async def test_a_token_the_service_rejects_is_token_rejected(service: KeyService, creds: Credentials) -> None:
    transport = httpx.ASGITransport(app=create_app(service))
    # Signs as "encryptor" with the auditor's key: a bad signature.
    async with KeyServiceClient(
        "http://127.0.0.1", "encryptor", creds.keys["auditor"], transport=transport
    ) as client:
        with pytest.raises(TokenRejected):
            await client.current_key("x")


class Flaky(httpx.AsyncBaseTransport):
    """Fails the first `failures` requests (with a status or a connection error), then forwards."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, failures: list[int | None], retry_after: str | None = None
    ) -> None:
        self.inner, self.failures, self.seen = inner, list(failures), 0
        self.headers = {} if retry_after is None else {"Retry-After": retry_after}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        if self.failures:
            failure = self.failures.pop(0)
            if failure is None:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(
                failure,
                json={"status": failure, "reason": "unavailable", "detail": "busy"},
                headers=self.headers,
            )
        return await self.inner.handle_async_request(request)


async def test_transient_failures_are_retried_with_backoff(service: KeyService, creds: Credentials) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    flaky = Flaky(httpx.ASGITransport(app=create_app(service)), [503, None, 502])
    async with KeyServiceClient(
        "http://127.0.0.1", "encryptor", creds.keys["encryptor"], transport=flaky, sleep=sleep, backoff_s=0.1
    ) as client:
        assert (await client.current_key("retry-me")).version == 1
    assert flaky.seen == 4  # each attempt with a fresh token (a replayed one would be refused)
    assert len(sleeps) == 3
    assert all(0 <= s <= cap for s, cap in zip(sleeps, [0.1, 0.2, 0.4], strict=True))


@pytest.mark.parametrize(
    ("retry_after", "waited"),
    [
        ("3", 3.0),  # what the service asked, not the backoff's fraction of a second
        ("0", 0.0),
        ("3600", 30.0),  # bounded: an hour's wait is not a retry but an outage
    ],
)
async def test_429_and_503_wait_what_retry_after_asks(
    service: KeyService, creds: Credentials, retry_after: str, waited: float
) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    flaky = Flaky(httpx.ASGITransport(app=create_app(service)), [429, 503], retry_after=retry_after)
    async with KeyServiceClient(
        "http://127.0.0.1", "encryptor", creds.keys["encryptor"], transport=flaky, sleep=sleep
    ) as client:
        assert (await client.current_key("patient")).version == 1
    assert sleeps == [waited, waited]


async def test_an_unreadable_retry_after_falls_back_to_the_backoff(
    service: KeyService, creds: Credentials
) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    flaky = Flaky(httpx.ASGITransport(app=create_app(service)), [503], retry_after="soon")
    async with KeyServiceClient(
        "http://127.0.0.1", "encryptor", creds.keys["encryptor"], transport=flaky, sleep=sleep, backoff_s=0.1
    ) as client:
        await client.current_key("patient")
    assert len(sleeps) == 1
    assert 0 <= sleeps[0] <= 0.1


async def test_unavailable_after_the_retries(service: KeyService, creds: Credentials) -> None:
    async def sleep(seconds: float) -> None:
        return None

    flaky = Flaky(httpx.ASGITransport(app=create_app(service)), [503] * 10)
    async with KeyServiceClient(
        "http://127.0.0.1", "encryptor", creds.keys["encryptor"], transport=flaky, sleep=sleep, retries=2
    ) as client:
        with pytest.raises(KeyServiceUnavailable):
            await client.current_key("never")
    assert flaky.seen == 3


async def test_non_idempotent_calls_are_not_retried_after_sending(
    service: KeyService, creds: Credentials
) -> None:
    async def sleep(seconds: float) -> None:
        return None

    flaky = Flaky(httpx.ASGITransport(app=create_app(service)), [503])
    async with KeyServiceClient(
        "http://127.0.0.1", "admin", creds.keys["admin"], transport=flaky, sleep=sleep
    ) as client:
        with pytest.raises(KeyServiceUnavailable):
            await client.rotate("once")
    assert flaky.seen == 1


async def test_nothing_listening_is_unavailable(creds: Credentials) -> None:
    async def sleep(seconds: float) -> None:
        return None

    async with KeyServiceClient(
        "http://127.0.0.1:1", "encryptor", creds.keys["encryptor"], sleep=sleep
    ) as client:
        with pytest.raises(KeyServiceUnavailable):
            await client.current_key("x")


async def test_from_settings_uses_the_role_key(creds: Credentials, tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, keyservice_url="http://127.0.0.1:8700", caller_key_file=creds.key_file("auditor")
    )
    async with KeyServiceClient.from_settings(settings, role="encryptor") as client:
        assert client.caller_id == "auditor"
    async with KeyServiceClient.from_settings(
        Settings(home=creds.directory.parent), role="encryptor"
    ) as client:
        assert client.caller_id == "encryptor"  # HOME/credentials/<role>.pem
    with pytest.raises(CredentialError, match="does not exist"):
        KeyServiceClient.from_settings(Settings(home=tmp_path / "empty"), role="encryptor")


async def test_handles_never_print_key_bytes(make_client: MakeClient) -> None:
    key = await make_client("encryptor").current_key("private")
    assert repr(key) == "DataKey(user_id='private', version=1)"
