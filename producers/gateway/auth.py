"""Verifying user tokens: HS256 with the gateway secret (as Supabase issues them) or a key from a JWKS file.

The token's header only *selects* a configured key; the algorithm is the key's own, never the one a
token asks for. So `alg: none`, an HS256 token signed with a public key's bytes, or an algorithm no key
was configured for are all refused before any signature is checked. `exp`, `sub` and `aud` are required.
Time claims are checked here against an injectable clock, so tests are deterministic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from producers.gateway.errors import Unauthorized
from pulseseal.claims import finite_time
from pulseseal.secretfiles import SecretFileError, read_secret

HS256 = "HS256"
MIN_SECRET_BYTES = 32
# Asymmetric algorithms a JWKS key may carry. Symmetric (`oct`) keys are refused in a JWKS file: a
# shared secret belongs in the secret file, where it is configured as exactly that.
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class AuthConfigError(Exception):
    """The gateway's token keys are missing or unusable (a configuration error, not a request error)."""


@dataclass(frozen=True, slots=True)
class VerifiedUser:
    """The subject of a verified token: the only user whose events the request may carry."""

    user_id: str


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    algorithm: str
    key: Any


class TokenVerifier:
    """Verifies `Authorization: Bearer` user tokens.

    Args:
        secret: The HS256 secret (at least 32 bytes), or None to accept JWKS keys only.
        jwks: JWKS document (parsed JSON) with public keys, or None.
        audience: The required `aud`.
        leeway_s: Clock skew tolerated on `exp` and `nbf`.
        clock: Seconds since the epoch (injectable for tests).

    Raises:
        AuthConfigError: no key at all, a short secret, or an unusable JWKS.
    """

    def __init__(
        self,
        *,
        secret: bytes | None,
        jwks: Mapping[str, Any] | None,
        audience: str,
        leeway_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if secret is not None and len(secret) < MIN_SECRET_BYTES:
            raise AuthConfigError(f"the HS256 user-token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._keys = _jwks_keys(jwks) if jwks is not None else []
        if secret is None and not self._keys:
            raise AuthConfigError("no user-token key: give an HS256 secret file or a JWKS file")
        self._audience = audience
        self._leeway_s = leeway_s
        self._clock = clock

    @classmethod
    def from_files(
        cls,
        *,
        secret_file: Path | None,
        secret_required: bool,
        jwks_file: Path | None,
        audience: str,
        leeway_s: float = 0.0,
    ) -> TokenVerifier:
        """Load the keys from the configured files.

        Args:
            secret_file: The HS256 secret file (its text, surrounding whitespace stripped, as UTF-8).
            secret_required: Whether a missing secret file is an error (it was configured explicitly).
            jwks_file: A JWKS file, or None.
            audience: The required `aud`.
            leeway_s: Clock skew tolerated on `exp` and `nbf`.

        Raises:
            AuthConfigError: a configured file is missing or unreadable, or its content is unusable.
        """
        secret: bytes | None = None
        if secret_file is not None and (secret_required or secret_file.exists()):
            try:
                secret = read_secret(secret_file).decode("utf-8").strip().encode()
            except SecretFileError as exc:
                raise AuthConfigError(str(exc)) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise AuthConfigError(
                    f"cannot read the user-token secret {secret_file}: {_why(exc)}"
                ) from None
        jwks: Mapping[str, Any] | None = None
        if jwks_file is not None:
            try:
                jwks = json.loads(jwks_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise AuthConfigError(f"cannot read the JWKS file {jwks_file}: {_why(exc)}") from None
        return cls(secret=secret, jwks=jwks, audience=audience, leeway_s=leeway_s)

    def verify(self, authorization: str | None) -> VerifiedUser:
        """Verify an `Authorization` header value.

        Raises:
            Unauthorized: no bearer token, or one that fails any check; the message says which check,
                never the token.
        """
        token = _bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthorized("the bearer token is not a well-formed JWT") from None
        key, algorithm = self._select(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                options={
                    "require": ["exp", "sub", "aud"],
                    # Checked below with our clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token lacks the required claim {exc.claim}") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token's audience is not accepted") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature is not valid") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("the token is not valid") from None
        self._check_times(claims)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("the token's sub claim must be a non-empty string")
        return VerifiedUser(subject)

    def _select(self, header: Mapping[str, Any]) -> tuple[Any, str]:
        algorithm = header.get("alg")
        if algorithm == HS256 and self._secret is not None:
            return self._secret, HS256
        if isinstance(algorithm, str) and algorithm in ASYMMETRIC:
            kid = header.get("kid")
            matches = [k for k in self._keys if k.algorithm == algorithm and (kid is None or k.kid == kid)]
            if len(matches) == 1:
                return matches[0].key, algorithm
        raise Unauthorized("the token's algorithm or key id is not accepted")

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        exp = finite_time(claims.get("exp"))
        if exp is None:
            raise Unauthorized("the token's exp claim must be a finite number")
        if now >= exp + self._leeway_s:
            raise Unauthorized("the token has expired")
        if "nbf" in claims:
            nbf = finite_time(claims["nbf"])
            if nbf is None or now < nbf - self._leeway_s:
                raise Unauthorized("the token is not valid yet")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing bearer token (Authorization: Bearer <user JWT>)")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <user JWT>'")
    return token.strip()


def _jwks_keys(jwks: Mapping[str, Any]) -> list[_Key]:
    entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise AuthConfigError("the JWKS file must hold an object with a non-empty 'keys' list")
    keys = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise AuthConfigError(f"JWKS key #{number} is not an object")
        if entry.get("kty") == "oct":
            raise AuthConfigError(f"JWKS key #{number} is symmetric; put an HS256 secret in the secret file")
        if "d" in entry:
            raise AuthConfigError(f"JWKS key #{number} is a private key; give the gateway public keys only")
        try:
            jwk = jwt.PyJWK(dict(entry))
        except jwt.PyJWTError as exc:
            raise AuthConfigError(f"JWKS key #{number} is unusable ({type(exc).__name__})") from None
        if jwk.algorithm_name not in ASYMMETRIC:
            raise AuthConfigError(f"JWKS key #{number} has an algorithm the gateway does not accept")
        keys.append(_Key(kid=entry.get("kid"), algorithm=jwk.algorithm_name, key=jwk.key))
    return keys


def _why(exc: Exception) -> str:
    # OS errors name the problem (no such file, permission); parse errors say only that it is not JSON.
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, UnicodeDecodeError):
        return "not valid UTF-8"
    return "not valid JSON" if isinstance(exc, ValueError) else type(exc).__name__
