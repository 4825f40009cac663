"""What the key service gives `pulseseal replay`: when a shredded version was destroyed (in the store, in
decrypt answers, through the client), and `POST /v1/audit/replays`, which writes a finished replay with its
purpose and counts to the audit log (and audits refusals like every other endpoint)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from redis.asyncio import Redis

from keyservice.client import KeyServiceClient
from keyservice.client.tokens import mint_token
from keyservice.service import KeyService
from keyservice.wire.errors import CallerNotAllowed, RequestInvalid
from tests.keyservice.app_calls import DECRYPT, ENCRYPT, assert_refused, audit_of, send
from tests.keyservice.helpers import Credentials

pytestmark = pytest.mark.integration
REPLAYS = "/v1/audit/replays"
REPORT = {"user_id": "rita", "purpose": "GDPR access request #7", "opened": 120, "failed": 2, "unreadable": 0}


# --- when a version was destroyed ---


async def test_the_store_keeps_when_each_version_was_destroyed(service: KeyService) -> None:
    store = service.store
    await store.current_keys(["dora"])
    await store.shred("dora", at="2026-01-01T00:00:00.000Z")
    await store.reinstate("dora", 2)
    await store.shred("dora", at="2026-02-01T00:00:00.000Z")
    await store.shred("dora", at="2026-03-01T00:00:00.000Z")  # destroys nothing new: dates stay
    lookup = await store.keys_at([("dora", 1), ("dora", 2), ("dora", 3)])
    assert lookup.missing == [("dora", 1, "shredded"), ("dora", 2, "shredded"), ("dora", 3, "unknown")]
    assert lookup.destroyed_at == {
        ("dora", 1): "2026-01-01T00:00:00.000Z",
        ("dora", 2): "2026-02-01T00:00:00.000Z",
    }


async def test_decrypt_says_when_a_shredded_version_was_destroyed(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService, redis: Redis
) -> None:
    await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["ivy", "jon"]})
    receipt = (await send(http, creds, "admin", "DELETE", "/v1/users/ivy")).json()
    await send(http, creds, "admin", "DELETE", "/v1/users/jon")
    # A shred from before dates were kept (or re-applied from the ledger to a restored backup) has none.
    await redis.hdel(service.store.user_key("jon"), "d:1")
    wanted = [
        {"user_id": "ivy", "version": 1},
        {"user_id": "jon", "version": 1},
        {"user_id": "ivy", "version": 5},
    ]
    response = await send(http, creds, "auditor", "POST", DECRYPT, {"keys": wanted, "purpose": "audit"})
    assert response.status_code == 200
    assert response.json()["missing"] == [
        {"user_id": "ivy", "version": 1, "reason": "shredded", "destroyed_at": receipt["destroyed_at"]},
        {"user_id": "jon", "version": 1, "reason": "shredded", "destroyed_at": None},
        {"user_id": "ivy", "version": 5, "reason": "unknown"},
    ]


async def test_the_client_hands_the_dates_on(make_client: Callable[..., KeyServiceClient]) -> None:
    encryptor, admin, auditor = make_client("encryptor"), make_client("admin"), make_client("auditor")
    await encryptor.encrypt_keys(["kim", "lea"])
    receipt = await admin.shred("kim")
    granted = await auditor.decrypt_keys([("kim", 1), ("lea", 1), ("lea", 2)], purpose="audit")
    assert set(granted.keys) == {("lea", 1)}
    assert granted.missing == {("kim", 1): "shredded", ("lea", 2): "unknown"}
    assert granted.destroyed_at == {("kim", 1): receipt.destroyed_at}


# --- POST /v1/audit/replays ---


async def test_a_replay_report_is_written_to_the_audit_log(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService
) -> None:
    response = await send(http, creds, "auditor", "POST", REPLAYS, REPORT)
    assert response.status_code == 200, response.text
    [record] = await audit_of(service, response)
    assert (record.caller, record.action, record.user_ids, record.versions, record.outcome) == (
        "auditor",
        "replay",
        ["rita"],
        [],
        "reported",
    )
    assert record.purpose == "GDPR access request #7"
    assert record.counts == {"opened": 120, "failed": 2, "unreadable": 0}
    assert response.json() == record.to_json()
    listed = await send(http, creds, "admin", "GET", "/v1/audit", query="?user_id=rita")
    assert [r["counts"] for r in listed.json()["records"]] == [{"opened": 120, "failed": 2, "unreadable": 0}]


async def test_only_decrypt_callers_may_report_a_replay(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService
) -> None:
    for role in ("encryptor", "admin"):
        response = await send(http, creds, role, "POST", REPLAYS, REPORT)
        await assert_refused(service, response, 403, "scope_missing")
        [record] = await audit_of(service, response)
        assert (record.caller, record.action) == (role, "replay")


async def test_a_report_token_is_bound_to_its_body(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService
) -> None:
    signed = mint_token(
        creds.keys["auditor"], "auditor", method="POST", path=REPLAYS, body=b"{}", scope="keys:decrypt"
    )
    response = await send(http, creds, "auditor", "POST", REPLAYS, REPORT, token=signed)
    await assert_refused(service, response, 401, "body_hash_mismatch")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"purpose": ""}, "purpose"),
        ({"purpose": None}, "purpose"),
        ({"opened": -1}, "opened"),
        ({"failed": 1.5}, "failed"),
        ({"unreadable": "3"}, "unreadable"),
        ({"user_id": "no spaces"}, "user_id"),
        ({"since": "2026-01-01T00:00:00Z"}, "since"),
    ],
)
async def test_a_bad_report_is_422_and_audited(
    http: httpx.AsyncClient,
    creds: Credentials,
    service: KeyService,
    change: dict[str, object],
    field: str,
) -> None:
    body = {k: v for k, v in {**REPORT, **change}.items() if v is not None}
    response = await send(http, creds, "auditor", "POST", REPLAYS, body)
    await assert_refused(service, response, 422, "invalid_body")
    assert response.json()["detail"].startswith(field)


async def test_the_client_reports_a_replay(make_client: Callable[..., KeyServiceClient]) -> None:
    auditor = make_client("auditor")
    record = await auditor.report_replay("sam", purpose="court order 42", opened=3, failed=0, unreadable=9)
    assert (record.action, record.user_ids, record.purpose, record.counts) == (
        "replay",
        ["sam"],
        "court order 42",
        {"opened": 3, "failed": 0, "unreadable": 9},
    )
    with pytest.raises(RequestInvalid):
        await auditor.report_replay("sam", purpose="", opened=0, failed=0, unreadable=0)
    with pytest.raises(CallerNotAllowed):
        await make_client("encryptor").report_replay("sam", purpose="p", opened=0, failed=0, unreadable=0)
