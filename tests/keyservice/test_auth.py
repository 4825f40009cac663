"""Token verification boundaries with an injected clock and an in-memory replay guard (the full attack
list runs against the real Redis in test_app.py)."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.auth import Authenticator, RequestFacts
from keyservice.callers import CallerRegistry
from keyservice.client.tokens import body_hash, key_id, mint_token
from keyservice.wire.errors import CallerNotAllowed, TokenRejected
from tests.keyservice.helpers import Credentials, claims_for, make_credentials, public_pem

NOW = 1_800_000_000.0
PATH = "/v1/keys/encrypt"
BODY = b'{"user_ids":["a"]}'


class MemoryReplayGuard:
    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], int] = {}

    async def first_use(self, caller_id: str, jti: str, ttl_s: int) -> bool:
        if (caller_id, jti) in self.seen:
            return False
        self.seen[(caller_id, jti)] = ttl_s
        return True


@pytest.fixture
def creds(tmp_path: Path) -> Credentials:
    return make_credentials(tmp_path)


@pytest.fixture
def guard() -> MemoryReplayGuard:
    return MemoryReplayGuard()


@pytest.fixture
def auth(creds: Credentials, guard: MemoryReplayGuard) -> Authenticator:
    return Authenticator(CallerRegistry.from_file(creds.callers_file), guard)


def facts(token: str, body: bytes = BODY, host: str = "127.0.0.1") -> RequestFacts:
    return RequestFacts("POST", PATH, body, host, f"Bearer {token}")


def token(creds: Credentials, **changes: object) -> str:
    claims = claims_for("encryptor", "POST", PATH, BODY, "keys:encrypt", now=NOW)
    claims.update(changes)
    return jwt.encode(claims, creds.keys["encryptor"], algorithm="EdDSA")


async def reason(auth: Authenticator, request: RequestFacts, now: float = NOW) -> str:
    with pytest.raises((TokenRejected, CallerNotAllowed)) as info:
        await auth.verify(request, "keys:encrypt", now=now)
    return info.value.reason


async def test_a_good_token_verifies_once(
    auth: Authenticator, creds: Credentials, guard: MemoryReplayGuard
) -> None:
    good = token(creds)
    caller = await auth.verify(facts(good), "keys:encrypt", now=NOW)
    assert caller.caller_id == "encryptor"
    assert caller.scopes == frozenset({"keys:encrypt"})
    # Remembered until the token cannot be accepted any more (exp + skew), not forever.
    assert list(guard.seen.values()) == [30 + 5 + 1]
    assert await reason(auth, facts(good)) == "replayed"


async def test_lifetime_of_exactly_60_s_is_accepted(auth: Authenticator, creds: Credentials) -> None:
    await auth.verify(facts(token(creds, exp=int(NOW) + 60)), "keys:encrypt", now=NOW)
    assert await reason(auth, facts(token(creds, exp=int(NOW) + 61))) == "lifetime_too_long"


async def test_clock_skew_of_5_s_is_tolerated_and_no_more(auth: Authenticator, creds: Credentials) -> None:
    await auth.verify(facts(token(creds, iat=int(NOW) + 5, exp=int(NOW) + 35)), "keys:encrypt", now=NOW)
    assert await reason(auth, facts(token(creds, iat=int(NOW) + 6, exp=int(NOW) + 36))) == "issued_in_future"
    # Expired 4 s ago: within skew. Expired 5 s ago: refused.
    await auth.verify(facts(token(creds, iat=int(NOW) - 30, exp=int(NOW) - 4)), "keys:encrypt", now=NOW)
    assert await reason(auth, facts(token(creds, iat=int(NOW) - 30, exp=int(NOW) - 5))) == "expired"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"iat": "yesterday"}, "malformed_token"),
        ({"exp": True}, "malformed_token"),
        ({"jti": ""}, "malformed_token"),
        ({"jti": 7}, "malformed_token"),
        ({"exp": int(NOW) - 1}, "malformed_token"),
        ({"aud": ["other", "pulseseal-keyservice"]}, None),
        ({"aud": ["other"]}, "wrong_audience"),
        ({"nbf": int(NOW) + 10}, "not_yet_valid"),
        ({"bh": body_hash(b"")}, "body_hash_mismatch"),
        ({"bh": None}, "body_hash_mismatch"),
        ({"htu": PATH + "/"}, "wrong_endpoint"),
        ({"scope": "keys:encrypt keys:admin"}, "scope_not_allowed"),
        ({"scope": "keys:encrypt  keys:encrypt"}, None),
        ({"scope": "keys:admin"}, "scope_missing"),
    ],
)
async def test_claims(
    auth: Authenticator, creds: Credentials, changes: dict[str, object], expected: str | None
) -> None:
    request = facts(token(creds, **changes))
    if expected is None:
        caller = await auth.verify(request, "keys:encrypt", now=NOW)
        assert caller.scopes == {"keys:encrypt"}
    else:
        assert await reason(auth, request) == expected


async def test_network_is_checked_against_the_tcp_peer(auth: Authenticator, creds: Credentials) -> None:
    assert await reason(auth, facts(token(creds), host="192.168.1.5")) == "network_not_allowed"


async def test_an_overlong_header_is_malformed(auth: Authenticator) -> None:
    assert await reason(auth, facts("x" * 5000)) == "malformed_token"


async def test_refusals_name_the_known_caller_for_the_audit_log(
    auth: Authenticator, creds: Credentials
) -> None:
    with pytest.raises(TokenRejected) as info:
        await auth.verify(facts(token(creds, aud="x")), "keys:encrypt", now=NOW)
    assert info.value.caller_id == "encryptor"
    with pytest.raises(TokenRejected) as info:
        await auth.verify(facts(token(creds, iss="mallory")), "keys:encrypt", now=NOW)
    assert info.value.caller_id is None


def test_minted_tokens_carry_every_contract_claim(creds: Credentials) -> None:
    minted = mint_token(
        creds.keys["admin"],
        "admin",
        method="delete",
        path="/v1/users/a",
        body=b"",
        scope="keys:admin",
        now=NOW,
    )
    assert jwt.get_unverified_header(minted)["alg"] == "EdDSA"
    claims = jwt.decode(minted, options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "iat", "exp", "jti", "scope", "htm", "htu", "bh"}
    assert (claims["htm"], claims["aud"], claims["exp"] - claims["iat"]) == (
        "DELETE",
        "pulseseal-keyservice",
        30,
    )
    assert claims["bh"] == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"  # SHA-256 of the empty string


NOT_FINITE = [float("nan"), float("inf"), float("-inf"), 10**400]


@pytest.mark.parametrize("claim", ["iat", "exp"])
@pytest.mark.parametrize("value", NOT_FINITE)
async def test_a_time_claim_that_is_not_a_finite_number_is_a_bad_token(
    auth: Authenticator, creds: Credentials, guard: MemoryReplayGuard, claim: str, value: object
) -> None:
    # The review's proof: `iat: NaN, exp: now + 30 days` passed the 60 s cap (every comparison with NaN is
    # false) and was accepted 29 days later; `exp: Infinity` answered 500.
    changes: dict[str, object] = {claim: value}
    if claim == "iat":
        changes["exp"] = int(NOW) + 30 * 86_400
    bad = token(creds, **changes)
    assert await reason(auth, facts(bad), now=NOW + 29 * 86_400) == "malformed_token"
    assert await reason(auth, facts(bad)) == "malformed_token"
    assert guard.seen == {}  # nothing stored with an attacker-chosen TTL


@pytest.mark.parametrize("value", NOT_FINITE)
async def test_a_non_finite_nbf_is_not_yet_valid(
    auth: Authenticator, creds: Credentials, value: object
) -> None:
    assert await reason(auth, facts(token(creds, nbf=value))) == "not_yet_valid"


async def test_a_caller_with_two_keys_is_matched_by_kid_so_keys_rotate_without_downtime(
    creds: Credentials, guard: MemoryReplayGuard
) -> None:
    document = json.loads(creds.callers_file.read_text())
    old, new = creds.keys["encryptor"], Ed25519PrivateKey.generate()
    document["callers"]["encryptor"]["public_keys"] = [public_pem(new)]  # beside the old `public_key`
    auth = Authenticator(CallerRegistry.from_document(document), guard)
    for key in (old, new):
        signed = mint_token(
            key, "encryptor", method="POST", path=PATH, body=BODY, scope="keys:encrypt", now=NOW
        )
        assert jwt.get_unverified_header(signed)["kid"] == key_id(key.public_key())
        assert (await auth.verify(facts(signed), "keys:encrypt", now=NOW)).caller_id == "encryptor"
    # An older client that sends no kid still verifies (each of the caller's keys is tried) ...
    claims = claims_for("encryptor", "POST", PATH, BODY, "keys:encrypt", now=NOW)
    no_kid = jwt.encode(claims, new, algorithm="EdDSA")
    assert (await auth.verify(facts(no_kid), "keys:encrypt", now=NOW)).caller_id == "encryptor"
    # ... a kid the caller does not have is refused, and so is a stranger's key without one.
    stranger = Ed25519PrivateKey.generate()
    named = jwt.encode(claims | {"jti": "x1"}, stranger, algorithm="EdDSA", headers={"kid": "nope"})
    assert await reason(auth, facts(named)) == "unknown_key_id"
    unnamed = jwt.encode(claims | {"jti": "x2"}, stranger, algorithm="EdDSA")
    assert await reason(auth, facts(unnamed)) == "bad_signature"
    # Once the old key is removed from the file, its tokens are refused.
    del document["callers"]["encryptor"]["public_key"]
    rotated = Authenticator(CallerRegistry.from_document(document), guard)
    old_token = mint_token(
        old, "encryptor", method="POST", path=PATH, body=BODY, scope="keys:encrypt", now=NOW
    )
    assert await reason(rotated, facts(old_token)) == "unknown_key_id"
