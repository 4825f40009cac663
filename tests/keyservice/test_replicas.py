"""Key-service replicas: two services on one key-store Redis (the real one) are interchangeable, and the
client spreads its requests over them and fails over (keyservice/client/replicas.py).

The replicas are two `KeyService`s opened on the same prefix, each behind its own ASGI app: all they
share is the key store, as two processes would. A replica that is down is a real closed port (connection
refused); one that answers 503 is a small app that does nothing else.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keyservice.app import create_app
from keyservice.bootstrap import ServiceOptions, open_service
from keyservice.client import KeyServiceClient
from keyservice.client.replicas import Replica, Replicas, attempts_for
from keyservice.client.shreds import ShredFollower
from keyservice.client.tokens import mint_token
from keyservice.client.transport_public import TransportKeyUnavailable, TransportSealer
from keyservice.service import KeyService
from keyservice.wire.errors import KeyServiceUnavailable
from pulseseal.envelope import open_sealed, seal
from pulseseal.topology import JSON
from schemas.events import HealthEvent
from schemas.parsing import parse_event
from tests.factories import valid_event
from tests.keyservice.app_calls import ENCRYPT, assert_problem, body_of, send
from tests.keyservice.helpers import Credentials
from tests.processes import free_port

A, B = "http://127.0.0.1:18701", "http://127.0.0.1:18702"  # names only: reached over ASGI


class Counting(httpx.ASGITransport):
    """An ASGI transport that counts the requests it carries and keeps their tokens."""

    def __init__(self, app: Any, port: int) -> None:
        super().__init__(app=app, client=("127.0.0.1", port))
        self.tokens: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.tokens.append(request.headers.get("Authorization", "").removeprefix("Bearer "))
        return await super().handle_async_request(request)


@pytest.fixture
async def replica_b(options: ServiceOptions) -> AsyncIterator[KeyService]:
    """A second key service on the same key store (same Redis, prefix and master key)."""
    opened = await open_service(options)
    yield opened
    await opened.close()


@pytest.fixture
def transports(service: KeyService, replica_b: KeyService) -> dict[str, Counting]:
    """Replica A and replica B, each its own app."""
    return {A: Counting(create_app(service), 40010), B: Counting(create_app(replica_b), 40011)}


@pytest.fixture
async def clients(
    creds: Credentials, transports: dict[str, Counting]
) -> AsyncIterator[Callable[..., KeyServiceClient]]:
    """Build clients of some of the replicas (or dead URLs); all closed at the end."""
    made: list[KeyServiceClient] = []

    def build(role: str, urls: list[str], **options: Any) -> KeyServiceClient:
        client = KeyServiceClient(urls, role, creds.keys[role], transport=dict(transports), **options)
        client._replicas._next = 0  # the first request starts at urls[0] (the rest is turn order)
        made.append(client)
        return client

    yield build
    for client in made:
        await client.aclose()


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not {what} within {timeout_s} s"
        await asyncio.sleep(0.005)


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nobody listens: connection refused


def _event(user_id: str) -> HealthEvent:
    return parse_event(json.dumps(valid_event(user_id=user_id)))


# --- the replicas share everything through the key store ---


async def test_two_replicas_give_the_same_key_for_the_same_user_and_version(
    clients: Callable[..., KeyServiceClient],
) -> None:
    on_a, on_b = clients("encryptor", [A]), clients("encryptor", [B])
    key_a = await on_a.current_key("shared-user")
    key_b = await on_b.current_key("shared-user")
    assert (key_a.version, key_b.version) == (1, 1)
    sealed = seal(_event("shared-user"), key_a)
    assert open_sealed(sealed, key_b).user_id == "shared-user"  # the same key bytes
    opened = await clients("auditor", [B]).key_version("shared-user", 1, purpose="replica test")
    assert open_sealed(sealed, opened).user_id == "shared-user"


async def test_a_shred_on_one_replica_is_seen_on_the_other(clients: Callable[..., KeyServiceClient]) -> None:
    encryptor_b = clients("encryptor", [B])
    await encryptor_b.current_key("to-shred")
    receipt = await clients("admin", [A]).shred("to-shred")
    assert receipt.versions_destroyed == [1]
    assert (await encryptor_b.encrypt_keys(["to-shred"], use_cache=False)).refused == {"to-shred": "shredded"}
    grant = await clients("auditor", [B]).decrypt_keys([("to-shred", 1)], purpose="replica test")
    assert grant.missing == {("to-shred", 1): "shredded"}


async def test_a_rotation_on_one_replica_is_seen_on_the_other(
    clients: Callable[..., KeyServiceClient],
) -> None:
    encryptor_b = clients("encryptor", [B])
    first = await encryptor_b.current_key("to-rotate")
    assert await clients("admin", [A]).rotate("to-rotate") == 2
    current = (await encryptor_b.encrypt_keys(["to-rotate"], use_cache=False)).keys["to-rotate"]
    assert current.version == 2
    old = await clients("auditor", [B]).key_version("to-rotate", 1, purpose="replica test")
    sealed = seal(_event("to-rotate"), first)
    assert open_sealed(sealed, old).user_id == "to-rotate"


async def test_a_token_used_on_one_replica_is_refused_on_the_other(
    creds: Credentials, transports: dict[str, Counting]
) -> None:
    payload = {"user_ids": ["replayed-user"]}
    token = mint_token(
        creds.keys["encryptor"],
        "encryptor",
        method="POST",
        path=ENCRYPT,
        body=body_of(payload),
        scope="keys:encrypt",
    )
    async with (
        httpx.AsyncClient(transport=transports[A], base_url=A) as on_a,
        httpx.AsyncClient(transport=transports[B], base_url=B) as on_b,
    ):
        first = await send(on_a, creds, "encryptor", "POST", ENCRYPT, payload, token=token)
        assert first.status_code == 200, first.text
        again = await send(on_b, creds, "encryptor", "POST", ENCRYPT, payload, token=token)
    assert_problem(again, 401, "replayed")


# --- the client spreads its requests and fails over ---


async def test_requests_take_turns_over_the_replicas(
    clients: Callable[..., KeyServiceClient], transports: dict[str, Counting]
) -> None:
    client = clients("encryptor", [A, B])
    for i in range(6):
        await client.encrypt_keys([f"turns-{i}"], use_cache=False)
    assert (len(transports[A].tokens), len(transports[B].tokens)) == (3, 3)


async def test_a_replica_that_refuses_connections_is_failed_over_at_once_then_asked_last(
    clients: Callable[..., KeyServiceClient], transports: dict[str, Counting]
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    client = clients("encryptor", [_dead_url(), A], sleep=sleep)
    assert (await client.encrypt_keys(["refused-0"], use_cache=False)).keys["refused-0"].version == 1
    assert client.requests_sent == 2
    assert waits == [0.0]  # no backoff before a replica not tried yet
    # Its turn comes again, but it failed moments ago: asked last, so the request goes straight to A.
    for i in range(1, 4):
        await client.encrypt_keys([f"refused-{i}"], use_cache=False)
    assert client.requests_sent == 5
    assert len(transports[A].tokens) == 4


async def test_a_replica_answering_503_is_failed_over_with_a_new_token(
    clients: Callable[..., KeyServiceClient], transports: dict[str, Counting]
) -> None:
    async def unavailable(request: Request) -> JSONResponse:
        return JSONResponse(
            {"type": "about:blank", "title": "Unavailable", "status": 503, "detail": "key store unavailable"},
            status_code=503,
            headers={"Retry-After": "20"},
        )

    busy = "http://127.0.0.1:18703"
    transports[busy] = Counting(Starlette(routes=[Route(ENCRYPT, unavailable, methods=["POST"])]), 40012)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    client = clients("encryptor", [busy, A], sleep=sleep)
    assert "busy-user" in (await client.encrypt_keys(["busy-user"], use_cache=False)).keys
    assert waits == [0.0]  # the Retry-After was about the busy replica, not about A
    (at_busy,), (at_a,) = transports[busy].tokens, transports[A].tokens
    ids = [jwt.decode(t, options={"verify_signature": False})["jti"] for t in (at_busy, at_a)]
    assert ids[0] != ids[1]


async def test_every_replica_is_tried_even_without_retries_and_then_it_is_unavailable(
    clients: Callable[..., KeyServiceClient],
) -> None:
    client = clients("encryptor", [_dead_url(), _dead_url(), _dead_url()], retries=0)
    with pytest.raises(KeyServiceUnavailable, match="not reachable"):
        await client.encrypt_keys(["nobody-home"])
    assert client.requests_sent == 3
    assert not await client.healthy()


async def test_healthy_when_one_replica_is(clients: Callable[..., KeyServiceClient]) -> None:
    assert await clients("encryptor", [_dead_url(), A]).healthy()


async def test_the_sealer_fails_over_for_the_transport_key(transports: dict[str, Counting]) -> None:
    async with TransportSealer([_dead_url(), B], transport=dict(transports)) as sealer:
        sealer._replicas._next = 0
        assert (await sealer.seal(b"{}", JSON)).key_id
        assert sealer.fetches == 2
    async with TransportSealer([_dead_url(), _dead_url()], retries=0) as sealer:
        with pytest.raises(TransportKeyUnavailable, match="ConnectError"):
            await sealer.seal(b"{}", JSON)
        assert sealer.fetches == 2


# --- the turn order itself ---


def _replicas(count: int, now: list[float]) -> Replicas:
    return Replicas(
        [Replica(f"http://127.0.0.1:{i + 1}", httpx.AsyncClient()) for i in range(count)],
        rng=random.Random(0),
        clock=lambda: now[0],
        cooldown_s=5.0,
    )


async def test_turn_order_starts_at_a_random_place_then_rotates_and_a_failed_replica_goes_last() -> None:
    now = [100.0]
    replicas = _replicas(3, now)
    try:
        starts = [replicas.order()[0].url for _ in range(3)]
        assert len(set(starts)) == 3
        order = replicas.order()
        replicas.failed(order[0])
        assert [replicas.order()[-1] for _ in range(3)] == [order[0]] * 3
        now[0] += 5.1  # the cooldown is over
        assert order[0] in [replicas.order()[0] for _ in range(3)]  # in turn again
        replicas.failed(order[0])
        replicas.answered(order[0])  # back in turn at once
        assert order[0] in [replicas.order()[0] for _ in range(3)]
    finally:
        await replicas.aclose()


def test_every_replica_gets_an_attempt_whatever_the_retry_budget() -> None:
    assert [attempts_for(r, n) for r, n in [(3, 1), (0, 1), (0, 3), (1, 2), (3, 2)]] == [4, 1, 3, 2, 4]


@pytest.fixture
async def b_on_a_socket(replica_b: KeyService) -> AsyncIterator[str]:
    """Replica B on a real socket (a stream needs one: the ASGI test transport buffers whole answers)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(replica_b), host="127.0.0.1", port=port, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await _until(lambda: server.started, 10.0, "uvicorn started")
    yield f"http://127.0.0.1:{port}"
    replica_b.erasure.notices.closing = True  # what `pulseseal keyservice` does on SIGTERM
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def test_the_shred_stream_fails_over_and_hears_the_shreds_of_every_replica(
    clients: Callable[..., KeyServiceClient], b_on_a_socket: str
) -> None:
    encryptor = clients("encryptor", [_dead_url(), b_on_a_socket])
    follower = ShredFollower(encryptor)
    follower.start()
    try:
        # The first attempt meets the dead replica, the next one B.
        await _until(lambda: follower.connected, 5.0, "connected to the live replica")
        await encryptor.current_key("streamed-user")
        await clients("admin", [A]).shred("streamed-user")
        await _until(lambda: follower.notices >= 1, 1.0, "the shred on A heard through B")
        assert encryptor.current_key_cache.get("streamed-user") is None
    finally:
        await follower.aclose()
