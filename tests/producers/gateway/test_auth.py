"""User tokens: HS256 with the gateway secret, asymmetric keys from a JWKS file, and every way to fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from producers.gateway.auth import AuthConfigError, TokenVerifier, VerifiedUser
from producers.gateway.errors import Unauthorized
from tests.producers.helpers import AUDIENCE, SECRET, USER, token

NOW = 1_800_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def jwk(public: Any, algorithm: type[RSAAlgorithm] | type[OKPAlgorithm], kid: str) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(algorithm.to_jwk(public))
    return entry | {"kid": kid}


JWKS = {
    "keys": [
        jwk(RSA_KEY.public_key(), RSAAlgorithm, "rsa-1") | {"alg": "RS256", "use": "sig"},
        jwk(ED_KEY.public_key(), OKPAlgorithm, "ed-1") | {"alg": "EdDSA"},
    ]
}


def verifier(
    *, secret: bytes | None = SECRET, jwks: dict[str, Any] | None = None, leeway_s: float = 0
) -> TokenVerifier:
    return TokenVerifier(secret=secret, jwks=jwks, audience=AUDIENCE, leeway_s=leeway_s, clock=lambda: NOW)


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": USER, "aud": AUDIENCE, "exp": int(NOW) + 60, "iat": int(NOW)}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs256(**changes: Any) -> str:
    return jwt.encode(claims(**changes), SECRET, algorithm="HS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """A JWT signed with HMAC-SHA256 by hand: PyJWT itself refuses some of the keys and claims tests need."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def test_a_supabase_style_hs256_token_gives_its_subject() -> None:
    assert verifier().verify(f"Bearer {hs256()}") == VerifiedUser(USER)


def test_the_scheme_is_case_insensitive_like_http_says() -> None:
    assert verifier().verify(f"bearer {hs256()}").user_id == USER


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"])
def test_no_bearer_token_is_refused(header: str | None) -> None:
    with pytest.raises(Unauthorized, match="Bearer"):
        verifier().verify(header)


def test_an_expired_token_is_refused() -> None:
    with pytest.raises(Unauthorized, match="expired"):
        verifier().verify(f"Bearer {hs256(exp=int(NOW) - 1)}")


def test_leeway_tolerates_a_little_clock_skew_and_no_more() -> None:
    assert verifier(leeway_s=30).verify(f"Bearer {hs256(exp=int(NOW) - 10)}").user_id == USER
    with pytest.raises(Unauthorized, match="expired"):
        verifier(leeway_s=30).verify(f"Bearer {hs256(exp=int(NOW) - 31)}")


def test_a_token_that_is_not_valid_yet_is_refused() -> None:
    with pytest.raises(Unauthorized, match="not valid yet"):
        verifier().verify(f"Bearer {hs256(nbf=int(NOW) + 60)}")


def test_a_token_signed_with_another_secret_is_refused() -> None:
    forged = jwt.encode(claims(), b"another-secret-that-is-32-bytes-long!", algorithm="HS256")
    with pytest.raises(Unauthorized, match="signature"):
        verifier().verify(f"Bearer {forged}")


def test_alg_none_is_refused() -> None:
    unsigned = (
        f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims()).encode())}."
    )
    with pytest.raises(Unauthorized, match="algorithm"):
        verifier(jwks=JWKS).verify(f"Bearer {unsigned}")


@pytest.mark.parametrize("missing", ["sub", "aud", "exp"])
def test_sub_aud_and_exp_are_required(missing: str) -> None:
    with pytest.raises(Unauthorized, match=missing):
        verifier().verify(f"Bearer {hs256(**{missing: None})}")


def test_another_audience_is_refused() -> None:
    with pytest.raises(Unauthorized, match="audience"):
        verifier().verify(f"Bearer {hs256(aud='anon')}")


@pytest.mark.parametrize("exp", ["soon", True, None])
def test_exp_must_be_a_number(exp: object) -> None:
    with pytest.raises(Unauthorized):
        verifier().verify(f"Bearer {signed({'alg': 'HS256'}, claims() | {'exp': exp}, SECRET)}")


def test_garbage_is_refused_without_echoing_it() -> None:
    with pytest.raises(Unauthorized) as caught:
        verifier().verify("Bearer not.a.jwt-CANARY")
    assert "CANARY" not in caught.value.message


def test_rs256_and_eddsa_tokens_from_the_jwks_are_accepted() -> None:
    rs = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    ed = jwt.encode(claims(sub="user-2"), ED_KEY, algorithm="EdDSA", headers={"kid": "ed-1"})
    check = verifier(secret=None, jwks=JWKS)
    assert check.verify(f"Bearer {rs}").user_id == USER
    assert check.verify(f"Bearer {ed}").user_id == "user-2"


def test_an_unknown_kid_is_refused() -> None:
    rs = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-2"})
    with pytest.raises(Unauthorized, match="key id"):
        verifier(secret=None, jwks=JWKS).verify(f"Bearer {rs}")


def test_a_token_signed_by_a_key_not_in_the_jwks_is_refused() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "rsa-1"})
    with pytest.raises(Unauthorized, match="signature"):
        verifier(secret=None, jwks=JWKS).verify(f"Bearer {forged}")


def test_the_key_decides_the_algorithm_not_the_token() -> None:
    # The classic confusion: an HS256 token "signed" with the RSA public key's PEM as the secret.
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = f"Bearer {signed({'alg': 'HS256', 'kid': 'rsa-1'}, claims(), pem)}"
    with pytest.raises(Unauthorized, match="algorithm"):
        verifier(secret=None, jwks=JWKS).verify(confused)
    with pytest.raises(Unauthorized, match="signature"):
        verifier(secret=SECRET, jwks=JWKS).verify(confused)
    # And an RS256 token is not checked against the HS256 secret.
    with pytest.raises(Unauthorized, match="algorithm"):
        verifier(secret=SECRET).verify(f"Bearer {jwt.encode(claims(), RSA_KEY, algorithm='RS256')}")


def test_a_real_clock_token_from_the_helpers_verifies_with_the_real_clock() -> None:
    real = TokenVerifier(secret=SECRET, jwks=None, audience=AUDIENCE)
    assert real.verify(f"Bearer {token()}").user_id == USER


@pytest.mark.parametrize(
    ("secret", "jwks", "message"),
    [
        (b"short", None, "at least 32 bytes"),
        (None, None, "no user-token key"),
        (None, {"keys": []}, "non-empty 'keys'"),
        (None, {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "symmetric"),
        (None, {"keys": [json.loads(RSAAlgorithm.to_jwk(RSA_KEY))]}, "private key"),
        (None, {"keys": [{"kty": "RSA", "n": "x"}]}, "unusable"),
    ],
)
def test_unusable_key_configuration_is_refused(
    secret: bytes | None, jwks: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(AuthConfigError, match=message):
        TokenVerifier(secret=secret, jwks=jwks, audience=AUDIENCE)


def test_keys_load_from_files_and_the_secret_is_stripped(tmp_path: Path) -> None:
    secret_file = tmp_path / "gateway-jwt.secret"
    secret_file.write_text(f"  {SECRET.decode()}\n")
    secret_file.chmod(0o600)
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(JWKS))
    loaded = TokenVerifier.from_files(
        secret_file=secret_file, secret_required=True, jwks_file=jwks_file, audience=AUDIENCE
    )
    assert loaded.verify(f"Bearer {token()}").user_id == USER


def test_missing_or_broken_key_files_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="cannot read the user-token secret"):
        TokenVerifier.from_files(
            secret_file=tmp_path / "nope", secret_required=True, jwks_file=None, audience=AUDIENCE
        )
    broken = tmp_path / "jwks.json"
    broken.write_text("{not json")
    with pytest.raises(AuthConfigError, match="not valid JSON"):
        TokenVerifier.from_files(secret_file=None, secret_required=False, jwks_file=broken, audience=AUDIENCE)
    # The dev default secret may be absent when a JWKS is configured.
    good = tmp_path / "good.json"
    good.write_text(json.dumps(JWKS))
    only_jwks = TokenVerifier.from_files(
        secret_file=tmp_path / "nope", secret_required=False, jwks_file=good, audience=AUDIENCE
    )
    with pytest.raises(Unauthorized, match="algorithm"):
        only_jwks.verify(f"Bearer {token()}")


@pytest.mark.parametrize("exp", [float("nan"), float("inf"), float("-inf"), 10**400])
def test_a_time_claim_that_is_not_a_finite_number_is_refused(exp: object) -> None:
    # Python's JSON (and PyJWT with it) reads NaN and Infinity; `now >= NaN` is false, so before this
    # check an `exp: NaN` token never expired.
    with pytest.raises(Unauthorized, match="finite"):
        verifier().verify(f"Bearer {signed({'alg': 'HS256'}, claims() | {'exp': exp}, SECRET)}")
    with pytest.raises(Unauthorized, match="not valid yet"):
        verifier().verify(f"Bearer {signed({'alg': 'HS256'}, claims() | {'nbf': exp}, SECRET)}")
