"""Transport keys in the key service (contract §6), against the real key-store Redis: created once on first
use, handed out only under `transport:open`, rotated and retired by admins, wrapped at rest, audited,
re-wrapped with the master key; and the client side (sealer and key ring) over ASGI."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from keyservice.app import create_app
from keyservice.client import KeyServiceClient
from keyservice.client.replicas import Replicas
from keyservice.client.transport_keys import TransportKeyRing, retire_transport_key, rotate_transport_key
from keyservice.client.transport_public import TransportKeyUnavailable, TransportSealer
from keyservice.rewrap import rewrap
from keyservice.service import KeyService
from keyservice.transport_keys import PUBLIC_CACHE_S, TransportKeyStore
from keyservice.wire.transport import TransportKeyCurrent, TransportKeyUnknown
from keyservice.wrapping import MasterKey
from pulseseal.topology import JSON, NDJSON
from pulseseal.transit import SUITE_NAME, SealedMessage, TransportUnopenable
from tests.keyservice.app_calls import assert_refused, audit_of, send
from tests.keyservice.helpers import Credentials

pytestmark = pytest.mark.integration
KEY = "/v1/transport/key"
OPEN = "/v1/transport/keys/open"
ROTATE = "/v1/transport/rotate"


def sealer_for(service: KeyService, **options: float) -> TransportSealer:
    transport = httpx.ASGITransport(app=create_app(service), client=("127.0.0.1", 40002))
    return TransportSealer("http://127.0.0.1", transport=transport, **options)  # type: ignore[arg-type]


async def test_public_key_needs_no_token_and_is_created_exactly_once(
    http: httpx.AsyncClient, service: KeyService
) -> None:
    answers = await asyncio.gather(*(http.get(KEY) for _ in range(20)))
    assert {a.status_code for a in answers} == {200}
    bodies = [a.json() for a in answers]
    assert all(b == bodies[0] for b in bodies)
    first = bodies[0]
    assert first["suite"] == SUITE_NAME == "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"
    assert len(base64.b64decode(first["mlkem768"])) == 1184
    assert len(base64.b64decode(first["x25519"])) == 32
    created = [r for r in await service.audit.query() if r.action == "transport_create"]
    assert [(r.key_ids, r.outcome) for r in created] == [([first["key_id"]], "granted")]


async def test_the_public_key_answer_is_cached_for_a_second_but_a_rotation_here_shows_at_once(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService, redis: Redis, prefix: str
) -> None:
    first = (await http.get(KEY)).json()["key_id"]
    await redis.hset(f"{prefix}transport", "cur", "tampered-but-cached")
    assert (await http.get(KEY)).json()["key_id"] == first  # no store read within the second
    await redis.hset(f"{prefix}transport", "cur", first)
    rotated = (await send(http, creds, "admin", "POST", ROTATE)).json()["key_id"]
    assert (await http.get(KEY)).json()["key_id"] == rotated


async def test_key_store_creates_once_under_concurrency(redis: Redis, prefix: str) -> None:
    master = MasterKey(os.urandom(32))
    await redis.hset(f"{prefix}meta", mapping={"mk_id": master.key_id_hex, "mk_check": master.check_value})
    stores = [TransportKeyStore(redis, master, prefix=prefix) for _ in range(10)]
    results = await asyncio.gather(*(s.current() for s in stores for _ in range(3)))
    assert len({key.key_id for key, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_open_hands_private_parts_to_the_encryptor_only(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService
) -> None:
    public = (await http.get(KEY)).json()
    granted = await send(http, creds, "encryptor", "POST", OPEN, {}, scope="transport:open")
    assert granted.status_code == 200, granted.text
    [key] = granted.json()["keys"]
    assert key["key_id"] == public["key_id"]
    assert len(base64.b64decode(key["mlkem768_seed"])) == 64
    assert len(base64.b64decode(key["x25519"])) == 32
    [record] = await audit_of(service, granted)
    assert (record.caller, record.action, record.key_ids) == ("encryptor", "transport_open", [key["key_id"]])
    for role in ("auditor", "admin"):
        refused = await send(http, creds, role, "POST", OPEN, {}, scope="transport:open")
        await assert_refused(service, refused, 403, "scope_missing")
    assert_status = await send(http, creds, "encryptor", "POST", OPEN, {"x": 1}, scope="transport:open")
    assert assert_status.status_code == 422


async def test_rotate_then_retire_and_the_current_key_cannot_be_retired(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService
) -> None:
    old = (await http.get(KEY)).json()["key_id"]
    refused = await send(http, creds, "encryptor", "POST", ROTATE)
    await assert_refused(service, refused, 403, "scope_missing")
    rotated = await send(http, creds, "admin", "POST", ROTATE)
    new = rotated.json()["key_id"]
    assert new != old
    assert (await http.get(KEY)).json()["key_id"] == new
    both = await send(http, creds, "encryptor", "POST", OPEN, {}, scope="transport:open")
    assert [k["key_id"] for k in both.json()["keys"]] == [new, old]  # current first

    current = await send(http, creds, "admin", "DELETE", f"/v1/transport/keys/{new}")
    await assert_refused(service, current, 409, "transport_key_current")
    unknown = await send(http, creds, "admin", "DELETE", "/v1/transport/keys/nosuchkey")
    await assert_refused(service, unknown, 404, "unknown_transport_key")
    retired = await send(http, creds, "admin", "DELETE", f"/v1/transport/keys/{old}")
    assert retired.status_code == 200
    assert retired.json()["key_id"] == old
    [record] = await audit_of(service, retired)
    assert (record.action, record.key_ids, record.caller) == ("transport_retire", [old], "admin")
    again = await send(http, creds, "admin", "DELETE", f"/v1/transport/keys/{old}")
    assert again.json() == retired.json()  # idempotent
    left = await send(http, creds, "encryptor", "POST", OPEN, {}, scope="transport:open")
    assert [k["key_id"] for k in left.json()["keys"]] == [new]


async def test_private_parts_rest_wrapped_and_retired_parts_are_gone(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService, redis: Redis, prefix: str
) -> None:
    old = (await http.get(KEY)).json()["key_id"]
    opened = (await send(http, creds, "encryptor", "POST", OPEN, {}, scope="transport:open")).json()["keys"][
        0
    ]
    seed, xpriv = base64.b64decode(opened["mlkem768_seed"]), base64.b64decode(opened["x25519"])
    stored: dict[Any, Any] = await redis.hgetall(f"{prefix}transport")
    raw = b"".join(k + v for k, v in stored.items())
    assert seed not in raw
    assert xpriv not in raw
    assert seed[:16] not in raw
    await send(http, creds, "admin", "POST", ROTATE)
    await send(http, creds, "admin", "DELETE", f"/v1/transport/keys/{old}")
    stored = await redis.hgetall(f"{prefix}transport")
    assert f"k:{old}".encode() not in stored
    assert f"r:{old}".encode() in stored


async def test_rewrap_moves_transport_keys_to_the_new_master_key(redis: Redis, prefix: str) -> None:
    old, new = MasterKey(os.urandom(32)), MasterKey(os.urandom(32))
    await redis.hset(f"{prefix}meta", mapping={"mk_id": old.key_id_hex, "mk_check": old.check_value})
    before = TransportKeyStore(redis, old, prefix=prefix)
    first, _ = await before.current()
    second = await before.rotate()
    report = await rewrap(redis, old, new, prefix=prefix)
    assert report.keys_rewrapped == 2
    after = TransportKeyStore(redis, new, prefix=prefix)
    live = await after.live()
    assert [k.key_id for k in live] == [second.key_id, first.key_id]
    assert [k.export_private_parts() for k in live] == [
        second.export_private_parts(),
        first.export_private_parts(),
    ]


async def test_sealer_and_key_ring_round_trip_across_a_rotation(
    service: KeyService, make_client: Callable[..., KeyServiceClient]
) -> None:
    now = [0.0]
    async with sealer_for(service, refresh_s=60.0) as sealer:
        sealer._clock = lambda: now[0]
        ring = TransportKeyRing(make_client("encryptor"), lifetime_s=60.0, clock=lambda: now[0])
        before = await sealer.seal(b'{"a":1}', JSON)
        assert await ring.open(before) == b'{"a":1}'
        assert sealer.fetches == 1
        new_id = await rotate_transport_key(make_client("admin"))
        assert (await sealer.seal(b"x", JSON)).key_id == before.key_id  # cached until refresh_s
        await asyncio.sleep(PUBLIC_CACHE_S + 0.1)  # another app instance: its own second of caching
        now[0] = 61.0
        after = await sealer.seal(b'{"b":2}\n', NDJSON)
        assert after.key_id == new_id
        assert await ring.open(after) == b'{"b":2}\n'  # unknown id: the ring fetched again
        assert await ring.open(before) == b'{"a":1}'  # the old key still opens until retired
        await retire_transport_key(make_client("admin"), before.key_id)
        now[0] = 200.0  # past the ring's lifetime: the retired key is dropped
        with pytest.raises(TransportUnopenable):
            await ring.open(before)
        assert before.key_id not in repr(ring)


async def test_retire_refusals_through_the_client(
    service: KeyService, make_client: Callable[..., KeyServiceClient]
) -> None:
    async with sealer_for(service) as sealer:
        current = (await sealer.public_key()).key_id
    admin = make_client("admin")
    with pytest.raises(TransportKeyCurrent):
        await retire_transport_key(admin, current)
    with pytest.raises(TransportKeyUnknown):
        await retire_transport_key(admin, "never-was")


async def test_an_unknown_key_id_refetches_at_most_once_per_interval(
    service: KeyService, make_client: Callable[..., KeyServiceClient]
) -> None:
    now = [0.0]
    ring = TransportKeyRing(make_client("encryptor"), min_refetch_s=1.0, clock=lambda: now[0])
    async with sealer_for(service) as sealer:
        sealed = await sealer.seal(b"{}", JSON)
    await ring.open(sealed)
    forged = SealedMessage(sealed.body, "made-up", JSON)
    for _ in range(5):
        with pytest.raises(TransportUnopenable):
            await ring.open(forged)
    assert ring.fetches == 1
    now[0] = 2.0
    with pytest.raises(TransportUnopenable):
        await ring.open(forged)
    assert ring.fetches == 2


async def test_sealer_without_a_key_service_fails_clearly() -> None:
    async with TransportSealer("http://127.0.0.1:1", retries=0) as sealer:
        with pytest.raises(TransportKeyUnavailable, match="cannot fetch the transport key"):
            await sealer.seal(b"{}", JSON)


async def test_sealer_keeps_a_stale_key_while_the_key_service_is_away_up_to_max_stale(
    service: KeyService,
) -> None:
    now = [0.0]
    async with sealer_for(service, refresh_s=10.0, max_stale_s=100.0, retries=0) as sealer:
        sealer._clock = lambda: now[0]
        key_id = (await sealer.seal(b"{}", JSON)).key_id
        await sealer._replicas.aclose()
        sealer._replicas = Replicas.open(["http://127.0.0.1:1"])  # the key service is gone
        now[0] = 50.0
        assert (await sealer.seal(b"{}", JSON)).key_id == key_id
        now[0] = 150.0
        with pytest.raises(TransportKeyUnavailable):
            await sealer.seal(b"{}", JSON)
