"""The shred notice stream end to end over real HTTP (uvicorn on a free port, the real key-store Redis):
a shredded user's keys leave a following client's cache well within a second; the stream needs
`keys:encrypt`; a client resumes after the last notice it saw and is told to reset when it cannot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
import uvicorn

from keyservice.app import create_app
from keyservice.client import KeyServiceClient
from keyservice.client.shreds import FALLBACK_TTL_S, ShredFollower
from keyservice.service import KeyService
from keyservice.wire.shreds import PATH
from pulseseal.envelope import DataKey
from schemas.rfc3339 import parse_rfc3339
from shell.processes import free_port
from tests.keyservice.helpers import Credentials

pytestmark = pytest.mark.integration


@pytest.fixture
async def base_url(service: KeyService) -> AsyncIterator[str]:
    """The service on a real socket (streams need one: the ASGI test transport buffers whole answers)."""
    port = free_port()
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await _until(lambda: server.started)
    yield f"http://127.0.0.1:{port}"
    service.erasure.notices.closing = True  # what `pulseseal keyservice` does on SIGTERM
    server.should_exit = True
    await asyncio.wait_for(task, 10)


@pytest.fixture
async def client_for(base_url: str, creds: Credentials) -> AsyncIterator[Callable[[str], KeyServiceClient]]:
    made: list[KeyServiceClient] = []

    def build(role: str) -> KeyServiceClient:
        client = KeyServiceClient(base_url, role, creds.keys[role])
        made.append(client)
        return client

    yield build
    for client in made:
        await client.aclose()


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "condition not met in time"
        await asyncio.sleep(0.002)
    return time.monotonic() - started


async def test_a_shredded_users_keys_leave_the_cache_within_a_second(
    client_for: Callable[[str], KeyServiceClient],
) -> None:
    encryptor, admin = client_for("encryptor"), client_for("admin")
    follower = ShredFollower(encryptor)
    follower.start()
    try:
        await _until(lambda: follower.connected)
        await encryptor.encrypt_keys(["s-victim", "s-keeper"])
        cache = encryptor.current_key_cache
        assert cache.get("s-victim") is not None
        receipt = await admin.shred("s-victim")
        answered = datetime.now(UTC)
        await _until(lambda: follower.notices >= 1, timeout_s=1.0)
        dropped = datetime.now(UTC)
        assert cache.get("s-victim") is None
        assert cache.get("s-keeper") is not None, "only the shredded user's keys go"
        assert (dropped - parse_rfc3339(receipt.destroyed_at)).total_seconds() < 1.0
        assert (dropped - answered).total_seconds() < 1.0
        grant = await encryptor.encrypt_keys(["s-victim"])
        assert grant.refused == {"s-victim": "shredded"}
    finally:
        await follower.aclose()


async def test_while_the_stream_is_down_nothing_is_kept_longer_than_the_fallback_ttl(
    creds: Credentials,
) -> None:
    clock = [100.0]
    client = KeyServiceClient(
        f"http://127.0.0.1:{free_port()}", "encryptor", creds.keys["encryptor"], retries=0
    )
    follower = ShredFollower(client)  # never started: the stream is down from the beginning
    assert not follower.connected
    cache = client.current_key_cache
    cache._clock = lambda: clock[0]
    cache.put("u", DataKey("u", 1, b"k" * 32, expires_at=None))
    clock[0] += FALLBACK_TTL_S - 0.01
    assert cache.get("u") is not None
    clock[0] += 0.02
    assert cache.sweep() == 1
    assert len(cache) == 0
    await client.aclose()


async def test_the_stream_needs_keys_encrypt(base_url: str, creds: Credentials) -> None:
    auditor = KeyServiceClient(base_url, "auditor", creds.keys["auditor"])
    try:
        async with auditor.stream(PATH, "keys:decrypt", {}) as response:
            await response.aread()
            assert response.status_code == 403
            assert response.headers["content-type"] == "application/problem+json"
    finally:
        await auditor.aclose()


async def _events(client: KeyServiceClient, last_id: str | None, count: int) -> list[tuple[str, str]]:
    """The first `count` (event, id) pairs of a stream opened after `last_id`."""
    headers = {} if last_id is None else {"Last-Event-ID": last_id}
    seen: list[tuple[str, str]] = []
    async with client.stream(PATH, "keys:encrypt", headers) as response:
        assert response.status_code == 200
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("id: "):
                seen.append((name, line[4:]))
                if len(seen) == count:
                    return seen
    return seen


async def test_a_client_resumes_after_the_last_notice_it_saw_or_is_told_to_reset(
    client_for: Callable[[str], KeyServiceClient],
) -> None:
    encryptor, admin = client_for("encryptor"), client_for("admin")
    [(ready, start)] = await _events(encryptor, None, 1)
    assert ready == "ready"
    await admin.shred("r-one")
    await admin.shred("r-two")
    replayed = await asyncio.wait_for(_events(encryptor, start, 3), 5)
    assert [name for name, _ in replayed] == ["ready", "shred", "shred"]
    reset = await asyncio.wait_for(_events(encryptor, "99999999999999-0", 2), 5)
    assert [name for name, _ in reset] == ["reset", "ready"]


async def test_when_the_stream_ends_the_follower_drops_every_cached_key(
    client_for: Callable[[str], KeyServiceClient], service: KeyService
) -> None:
    encryptor = client_for("encryptor")
    follower = ShredFollower(encryptor)
    follower.start()
    try:
        await _until(lambda: follower.connected)
        await encryptor.encrypt_keys(["d-user"])
        assert len(encryptor.current_key_cache) == 1
        service.erasure.notices.closing = True  # the service stops: its streams end within a heartbeat
        elapsed = await _until(lambda: len(encryptor.current_key_cache) == 0, timeout_s=2.0)
        assert elapsed < 1.0
    finally:
        await follower.aclose()


async def test_a_follower_that_breaks_drops_everything_and_goes_on(
    client_for: Callable[[str], KeyServiceClient],
) -> None:
    encryptor, admin = client_for("encryptor"), client_for("admin")
    heard: list[str] = []

    def on_shred(user: str) -> None:
        heard.append(user)
        if len(heard) == 1:
            raise RuntimeError("a bug in whatever follows the stream")

    follower = ShredFollower(encryptor, on_shred=on_shred)
    follower.start()
    try:
        await _until(lambda: follower.connected)
        await encryptor.encrypt_keys(["b-one", "b-two"])
        await admin.shred("b-one")
        # The failure counts as the stream going down: every cached key goes, not only b-one's ...
        await _until(lambda: len(encryptor.current_key_cache) == 0, timeout_s=1.0)
        # ... and following resumes after the last notice applied, so b-one's comes again.
        await _until(lambda: heard == ["b-one", "b-one"], timeout_s=5.0)
        await _until(lambda: follower.connected)
        await admin.shred("b-two")
        await _until(lambda: heard == ["b-one", "b-one", "b-two"], timeout_s=1.0)
    finally:
        await follower.aclose()


async def test_a_stream_that_falls_silent_is_given_up_within_a_second(creds: Credentials) -> None:
    """A key service (or a network) that stops sending without closing: the read never ends, yet the
    caches are dropped within `SILENCE_S` and closing the follower does not hang."""

    async def silent_after_ready(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        event = b"event: ready\nid: 1-0\ndata: {}\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(3600)  # and then nothing, ever

    server = await asyncio.start_server(silent_after_ready, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = KeyServiceClient(f"http://127.0.0.1:{port}", "encryptor", creds.keys["encryptor"])
    follower = ShredFollower(client)
    follower.start()
    try:
        await _until(lambda: follower.connected)
        client.current_key_cache.put("quiet", DataKey("quiet", 1, b"k" * 32, expires_at=None))
        elapsed = await _until(lambda: len(client.current_key_cache) == 0, timeout_s=3.0)
        assert elapsed < 1.0
        assert not follower.connected
    finally:
        started = time.monotonic()
        await follower.aclose()
        assert time.monotonic() - started < 3.0
        await client.aclose()
        server.close()
