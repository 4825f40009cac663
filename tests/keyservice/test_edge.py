"""The key service's edge (keyservice/edge.py): peers outside every caller's networks refused before their
body is read, slow bodies cut off, refusals rate limited per peer, repeated unauthenticated refusals
counted into one record, 404/405 audited with their source; against the real key-store Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from keyservice.app import create_app
from keyservice.client.tokens import mint_token
from keyservice.edge import RefusalLimiter, RefusalTally, TallyKey
from keyservice.service import KeyService
from keyservice.wire.audit import AuditRecord
from tests.keyservice.helpers import Credentials

pytestmark = pytest.mark.integration
ENCRYPT = "/v1/keys/encrypt"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_lets_bursts_of_200_and_50_a_second_through() -> None:
    clock = Clock()
    limiter = RefusalLimiter(clock=clock)
    assert all(limiter.take("10.0.0.1") is None for _ in range(200))
    assert limiter.take("10.0.0.1") == 1
    assert limiter.take("10.0.0.2") is None  # another peer has its own bucket
    clock.now += 1.0
    assert all(limiter.take("10.0.0.1") is None for _ in range(50))
    assert limiter.take("10.0.0.1") == 1


def test_the_limiter_forgets_full_buckets_first_when_it_has_too_many() -> None:
    clock = Clock()
    limiter = RefusalLimiter(clock=clock, max_peers=4)
    for _ in range(200):
        limiter.take("flooder")
    for peer in ("a", "b", "c", "d", "e"):
        limiter.take(peer)
    assert limiter.take("flooder") == 1  # the empty bucket was kept: it is the one that matters


async def test_the_tally_writes_the_first_of_a_kind_then_one_counted_record() -> None:
    written: list[tuple[TallyKey, int | None, str]] = []

    async def write(key: TallyKey, count: int | None, request_id: str) -> None:
        written.append((key, count, request_id))

    tally = RefusalTally(write, window_s=3600)
    key: TallyKey = ("10.0.0.9", "encrypt", "malformed_token", None)
    for n in range(1000):
        await tally.refused(key, f"r{n}")
    await tally.refused(("10.0.0.9", "encrypt", "unknown_issuer", None), "other")
    assert [(k[2], c, r) for k, c, r in written] == [
        ("malformed_token", None, "r0"),
        ("unknown_issuer", None, "other"),
    ]
    await tally.close()
    assert [(k[2], c) for k, c, _ in written[2:]] == [("malformed_token", 999)]
    await tally.refused(key, "next")  # a new window: the first is written at once again
    assert written[-1][1:] == (None, "next")
    await tally.close()


async def refusals(service: KeyService) -> list[AuditRecord]:
    await service.refusals.flush()
    return [r for r in await service.audit.query() if r.outcome == "refused"]


@pytest.fixture
async def outsider(service: KeyService) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose TCP peer is in no caller's networks."""
    transport = httpx.ASGITransport(app=create_app(service), client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def test_a_peer_outside_every_callers_network_is_refused_before_its_body_is_read(
    outsider: httpx.AsyncClient, service: KeyService
) -> None:
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(10):
            read += 1
            yield b"x" * 1000

    response = await outsider.post(ENCRYPT, content=body(), headers={"Authorization": "Bearer junk"})
    assert response.status_code == 403
    assert response.json()["reason"] == "network_not_allowed"
    assert read <= 1  # the ASGI transport may start the stream; the app never asked for more
    [record] = await refusals(service)
    assert (record.reason, record.source, record.caller) == ("network_not_allowed", "203.0.113.7", None)


async def test_a_body_that_does_not_arrive_in_time_is_refused_408(
    http: httpx.AsyncClient, service: KeyService
) -> None:
    service.edge.body_timeout_s = 0.3

    async def slow() -> AsyncIterator[bytes]:
        yield b'{"user_ids": '
        await asyncio.sleep(5)
        yield b"[]}"

    response = await asyncio.wait_for(http.post(ENCRYPT, content=slow()), 3)
    assert response.status_code == 408
    assert response.json()["reason"] == "body_timeout"
    assert [r.reason for r in await refusals(service)] == ["body_timeout"]


async def test_a_flood_of_refusals_is_answered_429_and_counted_and_a_good_caller_still_gets_keys(
    http: httpx.AsyncClient, service: KeyService, creds: Credentials
) -> None:
    responses = [
        await http.post(ENCRYPT, content=b"{}", headers={"Authorization": "Bearer junk"}) for _ in range(260)
    ]
    statuses = [r.status_code for r in responses]
    assert statuses[:200] == [401] * 200  # a burst of 200 refusals is answered as such
    assert set(statuses[200:]) <= {401, 429}
    assert 429 in statuses[200:]
    limited = next(r for r in responses if r.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    body = json.dumps({"user_ids": ["legit"]}).encode()
    token = mint_token(
        creds.keys["encryptor"], "encryptor", method="POST", path=ENCRYPT, body=body, scope="keys:encrypt"
    )
    good = await http.post(ENCRYPT, content=body, headers={"Authorization": f"Bearer {token}"})
    assert good.status_code == 200  # the flood shares its peer address; a good request is not refused
    records = await refusals(service)
    counted = sum((r.counts or {}).get("refused", 1) for r in records)
    assert counted == 260  # every refusal is in the audit log ...
    assert len(records) <= 4  # ... in a handful of records, not one per request
    assert {r.source for r in records} == {"127.0.0.1"}


async def test_unknown_paths_and_methods_are_refused_and_audited(
    http: httpx.AsyncClient, service: KeyService
) -> None:
    assert (await http.get("/v1/nothing-here")).status_code == 404
    assert (await http.get(ENCRYPT)).status_code == 405
    reasons = sorted((r.action, r.reason, r.source) for r in await refusals(service))
    assert reasons == [
        ("unrouted", "method_not_allowed", "127.0.0.1"),
        ("unrouted", "not_found", "127.0.0.1"),
    ]


async def test_an_authenticated_refusal_names_its_source(
    http: httpx.AsyncClient, service: KeyService, creds: Credentials
) -> None:
    body = b'{"user_ids": "not a list"}'
    token = mint_token(
        creds.keys["encryptor"], "encryptor", method="POST", path=ENCRYPT, body=body, scope="keys:encrypt"
    )
    response = await http.post(ENCRYPT, content=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422
    [record] = [r for r in await service.audit.query() if r.request_id == response.headers["X-Request-ID"]]
    assert (record.caller, record.source) == ("encryptor", "127.0.0.1")


@pytest.mark.parametrize("query", ["?limit=²", "?limit=\u0661\u0660", "?since=1969-12-31T23:59:59Z"])
async def test_audit_queries_that_no_number_or_time_can_answer_are_422(
    http: httpx.AsyncClient, creds: Credentials, query: str
) -> None:
    token = mint_token(
        creds.keys["admin"], "admin", method="GET", path="/v1/audit", body=b"", scope="keys:admin"
    )
    response = await http.get("/v1/audit" + query, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422, response.text


async def test_refusals_arriving_while_the_first_is_written_are_all_counted() -> None:
    written: list[tuple[TallyKey, int | None, str]] = []
    delays = iter([0.05, 0.01])

    async def slow_write(key: TallyKey, count: int | None, request_id: str) -> None:
        await asyncio.sleep(next(delays, 0.0))
        written.append((key, count, request_id))

    tally = RefusalTally(slow_write, window_s=3600)
    key: TallyKey = ("10.0.0.9", "encrypt", "malformed_token", None)
    first = asyncio.create_task(tally.refused(key, "r0"))  # its write is slow ...
    second = asyncio.create_task(tally.refused(key, "r1"))
    await asyncio.sleep(0.02)  # ... others arrive while it is being written
    for n in range(2, 7):
        await tally.refused(key, f"r{n}")
    await asyncio.gather(first, second)
    await tally.close()
    assert sum(1 if c is None else c for _, c, _ in written) == 7
