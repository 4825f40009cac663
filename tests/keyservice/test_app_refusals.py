"""Every attack on the key service's HTTP API, against the real key-store Redis: each answered with the
right status as an RFC 9457 problem, and an audit record."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.app import create_app
from keyservice.service import KeyService
from tests.keyservice.app_calls import (
    DECRYPT,
    ENCRYPT,
    assert_refused,
    body_of,
    send,
)
from tests.keyservice.helpers import Credentials, b64url, claims_for, public_pem, unsigned_jwt

pytestmark = pytest.mark.integration


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
