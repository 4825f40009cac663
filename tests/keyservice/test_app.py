"""The HTTP API against the real key-store Redis: grants, problem+json refusals, and every attack in the
issue, each answered with the right status and an audit record."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.app import create_app
from keyservice.client.tokens import mint_token
from keyservice.service import KeyService
from keyservice.wire.audit import AuditRecord
from tests.keyservice.helpers import Credentials, b64url, claims_for, public_pem, unsigned_jwt

pytestmark = pytest.mark.integration
ENCRYPT = "/v1/keys/encrypt"
DECRYPT = "/v1/keys/decrypt"


def body_of(payload: object) -> bytes:
    return json.dumps(payload).encode()


async def send(
    http: httpx.AsyncClient,
    creds: Credentials,
    role: str,
    method: str,
    path: str,
    payload: object | None = None,
    *,
    scope: str | None = None,
    token: str | None = None,
    body: bytes | None = None,
    query: str = "",
) -> httpx.Response:
    """One request signed by `role` (or with the given token), exactly as a caller sends it."""
    raw = body if body is not None else (b"" if payload is None else body_of(payload))
    if token is None:
        default_scope = {"encryptor": "keys:encrypt", "auditor": "keys:decrypt", "admin": "keys:admin"}
        token = mint_token(
            creds.keys[role],
            role,
            method=method,
            path=path,
            body=raw,
            scope=scope or default_scope.get(role, ""),
        )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await http.request(method, path + query, content=raw, headers=headers)


async def audit_of(service: KeyService, response: httpx.Response) -> list[AuditRecord]:
    request_id = response.headers["X-Request-ID"]
    return [r for r in await service.audit.query() if r.request_id == request_id]


def assert_problem(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["reason"] == reason
    assert problem["type"] == f"urn:pulseseal:problem:{reason}"
    assert {"title", "detail", "request_id"} <= set(problem)


async def assert_refused(service: KeyService, response: httpx.Response, status: int, reason: str) -> None:
    assert_problem(response, status, reason)
    records = await audit_of(service, response)
    if not records:
        # The second unauthenticated refusal of a kind within a second is counted, not copied (edge.py).
        before = [r for r in await service.audit.query() if r.reason == reason and r.counts]
        await service.refusals.flush()
        counted = [r for r in await service.audit.query() if r.reason == reason and r.counts]
        assert len(counted) == len(before) + 1
        assert counted[-1].outcome == "refused"
        assert counted[-1].source == "127.0.0.1"
        return
    assert [(r.outcome, r.reason) for r in records] == [("refused", reason)]


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


# --- attacks: each answered with the right status and an audit record ---


def spoiled(creds: Credentials, **changes: Any) -> str:
    body = body_of({"user_ids": ["zed"]})
    claims = claims_for("encryptor", "POST", ENCRYPT, body, "keys:encrypt")
    claims.update(changes)
    return jwt.encode(claims, creds.keys["encryptor"], algorithm="EdDSA")


async def attempt(http: httpx.AsyncClient, token: str | None, *, body: bytes | None = None) -> httpx.Response:
    raw = body if body is not None else body_of({"user_ids": ["zed"]})
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await http.post(ENCRYPT, content=raw, headers=headers)


async def test_missing_token(http: httpx.AsyncClient, service: KeyService) -> None:
    await assert_refused(service, await attempt(http, None), 401, "missing_token")


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "Zm9v.YmFy", ""])
async def test_malformed_token(http: httpx.AsyncClient, service: KeyService, token: str) -> None:
    response = await http.post(ENCRYPT, content=b"{}", headers={"Authorization": f"Bearer {token}"})
    await assert_refused(service, response, 401, "malformed_token")


async def test_wrong_authorization_scheme(
    http: httpx.AsyncClient, service: KeyService, creds: Credentials
) -> None:
    response = await http.post(ENCRYPT, content=b"{}", headers={"Authorization": f"Basic {spoiled(creds)}"})
    await assert_refused(service, response, 401, "malformed_token")


async def test_alg_none(http: httpx.AsyncClient, service: KeyService) -> None:
    claims = claims_for("encryptor", "POST", ENCRYPT, body_of({"user_ids": ["zed"]}), "keys:encrypt")
    token = unsigned_jwt({"alg": "none", "typ": "JWT"}, claims)
    await assert_refused(service, await attempt(http, token), 401, "algorithm_not_allowed")


async def test_hs256_with_the_public_key_as_secret(
    http: httpx.AsyncClient, service: KeyService, creds: Credentials
) -> None:
    claims = claims_for("encryptor", "POST", ENCRYPT, body_of({"user_ids": ["zed"]}), "keys:encrypt")
    header = {"alg": "HS256", "typ": "JWT"}
    unsigned = unsigned_jwt(header, claims).rsplit(".", 1)[0]
    secret = public_pem(creds.keys["encryptor"]).encode()
    token = unsigned + "." + b64url(hmac.digest(secret, unsigned.encode(), hashlib.sha256))
    await assert_refused(service, await attempt(http, token), 401, "algorithm_not_allowed")


@pytest.mark.parametrize(
    ("alg", "make_key"),
    [
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    ],
)
async def test_rs256_and_es256(
    http: httpx.AsyncClient, service: KeyService, alg: str, make_key: Callable[[], Any]
) -> None:
    claims = claims_for("encryptor", "POST", ENCRYPT, body_of({"user_ids": ["zed"]}), "keys:encrypt")
    token = jwt.encode(claims, make_key(), algorithm=alg)
    await assert_refused(service, await attempt(http, token), 401, "algorithm_not_allowed")


async def test_signed_by_another_key(http: httpx.AsyncClient, service: KeyService) -> None:
    claims = claims_for("encryptor", "POST", ENCRYPT, body_of({"user_ids": ["zed"]}), "keys:encrypt")
    token = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA")
    await assert_refused(service, await attempt(http, token), 401, "bad_signature")


async def test_expired(http: httpx.AsyncClient, service: KeyService, creds: Credentials) -> None:
    now = int(time.time())
    token = spoiled(creds, iat=now - 60, exp=now - 6)
    await assert_refused(service, await attempt(http, token), 401, "expired")


async def test_issued_in_the_future(http: httpx.AsyncClient, service: KeyService, creds: Credentials) -> None:
    now = int(time.time())
    token = spoiled(creds, iat=now + 10, exp=now + 40)
    await assert_refused(service, await attempt(http, token), 401, "issued_in_future")


async def test_lifetime_over_60_seconds(
    http: httpx.AsyncClient, service: KeyService, creds: Credentials
) -> None:
    now = int(time.time())
    token = spoiled(creds, iat=now, exp=now + 61)
    await assert_refused(service, await attempt(http, token), 401, "lifetime_too_long")


async def test_wrong_audience(http: httpx.AsyncClient, service: KeyService, creds: Credentials) -> None:
    await assert_refused(
        service, await attempt(http, spoiled(creds, aud="someone-else")), 401, "wrong_audience"
    )


async def test_unknown_issuer(http: httpx.AsyncClient, service: KeyService, creds: Credentials) -> None:
    await assert_refused(service, await attempt(http, spoiled(creds, iss="mallory")), 401, "unknown_issuer")


async def test_replayed_jti(http: httpx.AsyncClient, service: KeyService, creds: Credentials) -> None:
    token = spoiled(creds)
    assert (await attempt(http, token)).status_code == 200
    await assert_refused(service, await attempt(http, token), 401, "replayed")
    # A fresh token with a jti already used is a replay too.
    used = jwt.decode(token, options={"verify_signature": False})["jti"]
    await assert_refused(service, await attempt(http, spoiled(creds, jti=used)), 401, "replayed")


async def test_body_changed_after_signing(
    http: httpx.AsyncClient, service: KeyService, creds: Credentials
) -> None:
    response = await attempt(http, spoiled(creds), body=body_of({"user_ids": ["someone-else"]}))
    await assert_refused(service, response, 401, "body_hash_mismatch")


async def test_token_for_another_endpoint(
    http: httpx.AsyncClient, service: KeyService, creds: Credentials
) -> None:
    token = spoiled(creds, htu=DECRYPT)
    await assert_refused(service, await attempt(http, token), 401, "wrong_endpoint")
    await assert_refused(service, await attempt(http, spoiled(creds, htm="GET")), 401, "wrong_endpoint")


async def test_scope_missing(http: httpx.AsyncClient, service: KeyService, creds: Credentials) -> None:
    # The encryptor may not decrypt, even claiming the scope in its token.
    payload = {"keys": [{"user_id": "zed", "version": 1}], "purpose": "p"}
    response = await send(http, creds, "encryptor", "POST", DECRYPT, payload, scope="keys:decrypt")
    await assert_refused(service, response, 403, "scope_missing")
    # The gateway has no scope at all.
    response = await send(
        http, creds, "gateway", "POST", ENCRYPT, {"user_ids": ["zed"]}, scope="keys:encrypt"
    )
    await assert_refused(service, response, 403, "scope_missing")
    # A caller whose token lacks the scope it is allowed.
    response = await send(
        http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["zed"]}, scope="keys:other"
    )
    await assert_refused(service, response, 403, "scope_missing")


async def test_source_network_not_allowed(service: KeyService, creds: Credentials) -> None:
    transport = httpx.ASGITransport(app=create_app(service), client=("10.9.8.7", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as remote:
        response = await send(remote, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["zed"]})
    await assert_refused(service, response, 403, "network_not_allowed")


async def test_more_than_1000_user_ids(
    http: httpx.AsyncClient, service: KeyService, creds: Credentials
) -> None:
    response = await send(
        http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": [f"u{n}" for n in range(1001)]}
    )
    await assert_refused(service, response, 413, "too_many_keys")
    assert await service.store.state("u0") == (0, 0, False)


@pytest.mark.parametrize(
    "payload",
    [
        {"user_ids": ["ok", "bad user"]},
        {"user_ids": ["x" * 129]},
        {"user_ids": [""]},
        {"user_ids": [42]},
        {"user_ids": []},
        {"user_ids": ["ok"], "extra": 1},
        {"users": ["ok"]},
        ["ok"],
    ],
)
async def test_malformed_user_ids(
    http: httpx.AsyncClient, service: KeyService, creds: Credentials, payload: object
) -> None:
    response = await send(http, creds, "encryptor", "POST", ENCRYPT, payload)
    await assert_refused(service, response, 422, "invalid_body")
    assert "bad user" not in response.text  # the problem names the field, never the value


async def test_not_json(http: httpx.AsyncClient, service: KeyService, creds: Credentials) -> None:
    response = await send(http, creds, "encryptor", "POST", ENCRYPT, body=b"\xff{not json")
    await assert_refused(service, response, 422, "invalid_body")


async def test_malformed_user_id_in_path(
    http: httpx.AsyncClient, service: KeyService, creds: Credentials
) -> None:
    response = await send(http, creds, "admin", "POST", "/v1/users/a%20b/rotate")
    assert response.status_code in (401, 422)  # the path as sent and as decoded differ; either way refused
    response = await send(http, creds, "admin", "POST", "/v1/users/" + "x" * 200 + "/rotate")
    await assert_refused(service, response, 422, "invalid_user_id")


async def test_decrypt_purpose_is_required(
    http: httpx.AsyncClient, service: KeyService, creds: Credentials
) -> None:
    for payload in (
        {"keys": [{"user_id": "a", "version": 1}]},
        {"keys": [{"user_id": "a", "version": 1}], "purpose": ""},
        {"keys": [{"user_id": "a", "version": 1}], "purpose": "p" * 501},
    ):
        response = await send(http, creds, "auditor", "POST", DECRYPT, payload)
        await assert_refused(service, response, 422, "invalid_body")


async def test_oversized_body(http: httpx.AsyncClient, service: KeyService, creds: Credentials) -> None:
    huge = body_of({"user_ids": ["a" * 100] * 3000})
    response = await send(http, creds, "encryptor", "POST", ENCRYPT, body=huge)
    await assert_refused(service, response, 413, "too_large")
    # Refused before reading it all, even without a Content-Length (chunked).

    async def chunks() -> Any:
        for _ in range(300):
            yield b"x" * 1024

    response = await http.post(ENCRYPT, content=chunks())
    await assert_refused(service, response, 413, "too_large")


async def test_problem_details_never_echo_tokens(http: httpx.AsyncClient, creds: Credentials) -> None:
    token = spoiled(creds, aud="nope")
    response = await attempt(http, token)
    assert token not in response.text
    assert token.split(".")[1] not in response.text


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
