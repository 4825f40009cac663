"""Caller authentication: a request's bearer token → `VerifiedCaller`, or a refusal with a reason.

PyJWT checks the signature with `algorithms=["EdDSA"]` and the caller's Ed25519 key only; everything
time- and request-related is checked here, with an injectable clock: audience, lifetime ≤ 60 s, clock skew
≤ 5 s, `htm`/`htu`/`bh` binding to this request, source network, scope, and single use of `jti`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keyservice.callers import CallerPolicy, CallerRegistry
from keyservice.client.tokens import AUDIENCE, CLOCK_SKEW_S, MAX_LIFETIME_S, body_hash
from keyservice.wire.errors import CallerNotAllowed, TokenRejected
from pulseseal.claims import finite_time

MAX_TOKEN_CHARS = 4096
_DECODE_OPTIONS: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
    "verify_aud": False,
    "verify_iss": False,
}


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the HTTP edge saw of a request; nothing here is trusted yet."""

    method: str
    path: str
    body: bytes
    client_host: str
    authorization: str | None


@dataclass(frozen=True, slots=True)
class VerifiedCaller:
    """A caller whose token passed every check for this request."""

    caller_id: str
    scopes: frozenset[str]
    jti: str


class ReplayGuard(Protocol):
    """Remembers token ids until they expire."""

    async def first_use(self, caller_id: str, jti: str, ttl_s: int) -> bool:
        """True the first time `(caller_id, jti)` is seen; false for a replay."""
        ...


class Authenticator:
    """Verifies caller tokens against the callers file.

    Args:
        registry: Known callers.
        replay_guard: Where used `jti`s are remembered.
        audience: Required `aud`.
    """

    def __init__(self, registry: CallerRegistry, replay_guard: ReplayGuard, *, audience: str = AUDIENCE):
        self.registry = registry
        self._replay = replay_guard
        self._audience = audience

    async def verify(self, facts: RequestFacts, scope: str, *, now: float | None = None) -> VerifiedCaller:
        """Verify the request's token and that the caller may use `scope` from where it calls.

        Raises:
            TokenRejected: missing, malformed, wrong algorithm, unknown issuer, bad signature, expired,
                issued in the future, lifetime over 60 s, wrong audience, bound to another request, replayed.
            CallerNotAllowed: the caller's network or scopes do not allow this request.
        """
        now = time.time() if now is None else now
        token = _bearer_token(facts.authorization)
        policy, keys = self._issuer_keys(token)
        claims = _decode(token, keys, policy.caller_id)
        try:
            jti, expires = _check_claims(claims, facts, now, self._audience)
        except TokenRejected as exc:
            exc.caller_id = policy.caller_id
            raise
        if not policy.allows_address(facts.client_host):
            raise _forbidden("source network not allowed for this caller", "network_not_allowed", policy)
        token_scopes = frozenset(str(claims.get("scope", "")).split())
        if scope not in token_scopes or scope not in policy.scopes:
            raise _forbidden(f"scope {scope} required", "scope_missing", policy)
        if not token_scopes <= policy.scopes:
            raise _forbidden("token asks for scopes this caller is not allowed", "scope_not_allowed", policy)
        ttl = max(1, int(expires + CLOCK_SKEW_S - now) + 1)
        if not await self._replay.first_use(policy.caller_id, jti, ttl):
            raise _refused("token already used (jti replayed)", "replayed", policy.caller_id)
        return VerifiedCaller(policy.caller_id, token_scopes, jti)

    def _issuer_keys(self, token: str) -> tuple[CallerPolicy, list[Ed25519PublicKey]]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise _refused("malformed token", "malformed_token") from None
        if header.get("alg") != "EdDSA":
            raise _refused("only EdDSA tokens are accepted", "algorithm_not_allowed")
        issuer = unverified.get("iss")
        policy = self.registry.get(issuer) if isinstance(issuer, str) else None
        if policy is None:
            raise _refused("unknown token issuer", "unknown_issuer")
        keys = policy.keys_for(header.get("kid"))
        if not keys:
            raise _refused("unknown key id (kid) for this caller", "unknown_key_id", policy.caller_id)
        return policy, keys


def _decode(token: str, keys: list[Ed25519PublicKey], caller_id: str) -> dict[str, Any]:
    # Without a `kid` (older clients) each of the caller's keys is tried: a rotation keeps at most a few.
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(token, key, algorithms=["EdDSA"], options=_DECODE_OPTIONS)
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError:
            raise _refused("malformed token", "malformed_token", caller_id) from None
        return claims
    raise _refused("bad token signature", "bad_signature", caller_id)


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise _refused("missing bearer token", "missing_token")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        raise _refused("malformed Authorization header", "malformed_token")
    return token


def _check_claims(
    claims: dict[str, Any], facts: RequestFacts, now: float, audience: str
) -> tuple[str, float]:
    iat, exp, jti = finite_time(claims.get("iat")), finite_time(claims.get("exp")), claims.get("jti")
    if iat is None or exp is None:
        raise _refused("token needs finite numeric iat and exp", "malformed_token")
    if not isinstance(jti, str) or not 1 <= len(jti) <= 128:
        raise _refused("token needs a jti of 1 to 128 characters", "malformed_token")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise _refused("wrong token audience", "wrong_audience")
    if exp - iat > MAX_LIFETIME_S:
        raise _refused(f"token lifetime over {MAX_LIFETIME_S} s", "lifetime_too_long")
    if exp <= iat:
        raise _refused("token exp must be after iat", "malformed_token")
    if iat > now + CLOCK_SKEW_S:
        raise _refused("token issued in the future", "issued_in_future")
    nbf = claims.get("nbf")
    if nbf is not None and ((nbf_time := finite_time(nbf)) is None or nbf_time > now + CLOCK_SKEW_S):
        raise _refused("token not yet valid", "not_yet_valid")
    if exp + CLOCK_SKEW_S <= now:
        raise _refused("token expired", "expired")
    if claims.get("htm") != facts.method or claims.get("htu") != facts.path:
        raise _refused("token is for another endpoint (htm/htu)", "wrong_endpoint")
    bh = claims.get("bh")
    if not isinstance(bh, str) or not hmac.compare_digest(bh, body_hash(facts.body)):
        raise _refused("body does not match the token (bh)", "body_hash_mismatch")
    return jti, exp


def _refused(detail: str, reason: str, caller_id: str | None = None) -> TokenRejected:
    error = TokenRejected(detail, reason=reason)
    error.caller_id = caller_id
    return error


def _forbidden(detail: str, reason: str, policy: CallerPolicy) -> CallerNotAllowed:
    error = CallerNotAllowed(detail, reason=reason)
    error.caller_id = policy.caller_id
    return error


def jti_key(prefix: str, caller_id: str, jti: str) -> str:
    """The Redis key remembering one used token id (hashed: `jti` is caller-chosen text)."""
    digest = hashlib.sha256(f"{caller_id}\x00{jti}".encode()).hexdigest()[:40]
    return f"{prefix}jti:{digest}"
