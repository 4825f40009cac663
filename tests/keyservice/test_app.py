"""The HTTP API against the real key-store Redis: grants, answers and their audit records (the refusals
are in test_app_refusals.py)."""

from __future__ import annotations

import httpx
import pytest

from keyservice.service import KeyService
from tests.keyservice.app_calls import (
    DECRYPT,
    ENCRYPT,
    assert_problem,
    assert_refused,
    audit_of,
    send,
)
from tests.keyservice.helpers import Credentials

pytestmark = pytest.mark.integration


# --- grants ---


async def test_encrypt_creates_then_returns_the_same_key(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService
) -> None:
    first = await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["alice", "bob", "alice"]})
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    keys = first.json()["keys"]
    assert [(k["user_id"], k["version"], k["expires_in"]) for k in keys] == [("alice", 1, 60), ("bob", 1, 60)]
    assert first.json()["refused"] == []
    again = await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["bob"]})
    assert again.json()["keys"][0]["key"] == keys[1]["key"]
    [record] = await audit_of(service, first)
    assert (record.caller, record.action, record.user_ids, record.versions, record.outcome) == (
        "encryptor",
        "encrypt",
        ["alice", "bob"],
        [1, 1],
        "granted",
    )


async def test_a_thousand_users_in_one_request(http: httpx.AsyncClient, creds: Credentials) -> None:
    users = [f"user-{n}" for n in range(1000)]
    response = await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": users})
    assert response.status_code == 200
    assert [k["user_id"] for k in response.json()["keys"]] == users
    assert len({k["key"] for k in response.json()["keys"]}) == 1000


async def test_decrypt_returns_versions_and_missing_with_reasons(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService
) -> None:
    enc = await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["carol"]})
    v1 = enc.json()["keys"][0]["key"]
    rotated = await send(http, creds, "admin", "POST", "/v1/users/carol/rotate")
    assert rotated.json() == {"user_id": "carol", "version": 2}
    wanted = [
        {"user_id": "carol", "version": 1},
        {"user_id": "carol", "version": 2},
        {"user_id": "carol", "version": 9},
        {"user_id": "nobody", "version": 1},
    ]
    response = await send(
        http, creds, "auditor", "POST", DECRYPT, {"keys": wanted, "purpose": "GDPR export #12"}
    )
    assert response.status_code == 200
    answer = response.json()
    assert [(k["user_id"], k["version"]) for k in answer["keys"]] == [("carol", 1), ("carol", 2)]
    assert answer["keys"][0]["key"] == v1
    assert answer["missing"] == [
        {"user_id": "carol", "version": 9, "reason": "unknown"},
        {"user_id": "nobody", "version": 1, "reason": "unknown"},
    ]
    records = await audit_of(service, response)
    assert {(r.outcome, r.reason, r.purpose) for r in records} == {
        ("granted", None, "GDPR export #12"),
        ("refused", "unknown", "GDPR export #12"),
    }
    # Decrypt never creates a key.
    assert await service.store.state("nobody") == (0, 0, False)


async def test_rotation_changes_the_current_key_and_old_versions_still_decrypt(
    http: httpx.AsyncClient, creds: Credentials
) -> None:
    before = (await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["dave"]})).json()["keys"][0]
    await send(http, creds, "admin", "POST", "/v1/users/dave/rotate")
    after = (await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["dave"]})).json()["keys"][0]
    assert (before["version"], after["version"]) == (1, 2)
    assert before["key"] != after["key"]
    old = await send(
        http, creds, "auditor", "POST", DECRYPT, {"keys": [{"user_id": "dave", "version": 1}], "purpose": "p"}
    )
    assert old.json()["keys"][0]["key"] == before["key"]


async def test_shred_refuses_the_user_until_reinstated(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService
) -> None:
    await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["erin"]})
    await send(http, creds, "admin", "POST", "/v1/users/erin/rotate")
    shred = await send(http, creds, "admin", "DELETE", "/v1/users/erin")
    assert shred.status_code == 200
    receipt = shred.json()
    assert set(receipt) == {
        "user_id",
        "versions_destroyed",
        "destroyed_at",
        "backups_unreadable_after",
        "signature",
    }
    assert (receipt["user_id"], receipt["versions_destroyed"]) == ("erin", [1, 2])

    enc = await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["erin", "frank"]})
    assert [k["user_id"] for k in enc.json()["keys"]] == ["frank"]
    assert enc.json()["refused"] == [{"user_id": "erin", "reason": "shredded"}]
    assert await service.store.state("erin") == (0, 2, True)  # no key silently created
    records = await audit_of(service, enc)
    assert {(tuple(r.user_ids), r.outcome, r.reason) for r in records} == {
        (("frank",), "granted", None),
        (("erin",), "refused", "shredded"),
    }
    dec = await send(
        http, creds, "auditor", "POST", DECRYPT, {"keys": [{"user_id": "erin", "version": 1}], "purpose": "p"}
    )
    assert dec.json() == {
        "keys": [],
        "missing": [
            {"user_id": "erin", "version": 1, "reason": "shredded", "destroyed_at": receipt["destroyed_at"]}
        ],
    }
    rotate = await send(http, creds, "admin", "POST", "/v1/users/erin/rotate")
    await assert_refused(service, rotate, 409, "shredded")
    [refusal] = await audit_of(service, rotate)
    assert (refusal.caller, refusal.action, refusal.user_ids) == ("admin", "rotate", ["erin"])

    back = await send(http, creds, "admin", "POST", "/v1/users/erin/reinstate")
    assert back.json() == {"user_id": "erin", "version": 3}  # above every destroyed version
    enc = await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["erin"]})
    assert enc.json()["keys"][0]["version"] == 3
    dec = await send(
        http, creds, "auditor", "POST", DECRYPT, {"keys": [{"user_id": "erin", "version": 2}], "purpose": "p"}
    )
    assert dec.json()["missing"] == [
        {"user_id": "erin", "version": 2, "reason": "shredded", "destroyed_at": receipt["destroyed_at"]}
    ]
    again = await send(http, creds, "admin", "POST", "/v1/users/erin/reinstate")
    await assert_refused(service, again, 409, "not_shredded")


async def test_audit_endpoint_filters_by_user_and_time(http: httpx.AsyncClient, creds: Credentials) -> None:
    await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["gina"]})
    await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["hank"]})
    response = await send(http, creds, "admin", "GET", "/v1/audit", query="?user_id=gina")
    records = response.json()["records"]
    assert [r["user_ids"] for r in records] == [["gina"]]
    assert set(records[0]) == {
        "time",
        "caller",
        "action",
        "user_ids",
        "versions",
        "outcome",
        "request_id",
        "purpose",
        "reason",
    }
    future = await send(http, creds, "admin", "GET", "/v1/audit", query="?since=2999-01-01T00:00:00Z")
    assert future.json() == {"records": []}
    bad = await send(http, creds, "admin", "GET", "/v1/audit", query="?since=yesterday")
    assert_problem(bad, 422, "invalid_time")


async def test_health_and_unknown_paths(http: httpx.AsyncClient) -> None:
    health = await http.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "durable": True}
    assert_problem(await http.get("/v1/nothing"), 404, "not_found")
    assert_problem(await http.get(ENCRYPT), 405, "method_not_allowed")


async def test_metrics_count_grants_and_refusals_without_user_ids(
    http: httpx.AsyncClient, creds: Credentials
) -> None:
    await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["metric-user-1", "metric-user-2"]})
    await http.post(ENCRYPT, content=b"{}")
    text = (await http.get("/metrics")).text
    assert 'pulseseal_keyservice_keys_granted_total{action="encrypt"} 2.0' in text
    assert 'pulseseal_keyservice_refusals_total{reason="missing_token"} 1.0' in text
    assert 'pulseseal_keyservice_request_duration_seconds_count{endpoint="encrypt"} 2.0' in text
    assert "metric-user" not in text


async def test_asking_for_a_shredded_user_is_counted_by_caller_never_by_user(
    http: httpx.AsyncClient, creds: Credentials
) -> None:
    await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["gone-user"]})
    await send(http, creds, "admin", "DELETE", "/v1/users/gone-user")
    before = (await http.get("/metrics")).text
    assert 'pulseseal_shredded_access_total{caller="encryptor"}' not in before
    await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["gone-user", "kept-user"]})
    wanted = {"keys": [{"user_id": "gone-user", "version": 1}], "purpose": "audit"}
    await send(http, creds, "auditor", "POST", "/v1/keys/decrypt", wanted)
    text = (await http.get("/metrics")).text
    assert 'pulseseal_shredded_access_total{caller="encryptor"} 1.0' in text
    assert 'pulseseal_shredded_access_total{caller="auditor"} 1.0' in text
    assert "gone-user" not in text


async def test_a_repeated_shred_lists_the_versions_destroyed_earlier(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService
) -> None:
    await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["twice"]})
    await send(http, creds, "admin", "POST", "/v1/users/twice/rotate")
    first = await send(http, creds, "admin", "DELETE", "/v1/users/twice")
    assert first.json()["versions_destroyed"] == [1, 2]
    again = await send(http, creds, "admin", "DELETE", "/v1/users/twice")
    assert again.status_code == 200
    # Nothing was left to destroy; the receipt still says which versions are gone (not an empty list).
    assert again.json()["versions_destroyed"] == [1, 2]
    assert again.json()["destroyed_at"] >= first.json()["destroyed_at"]
