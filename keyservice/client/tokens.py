"""Minting caller tokens (docs/contract.md §6): EdDSA JWTs bound to one request's method, path and body.

Shared by the client library and the tests; the service's side is `auth.py`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from keyservice.wire.errors import KeyServiceError
from pulseseal.secretfiles import SecretFileError, read_secret

AUDIENCE = "pulseseal-keyservice"
MAX_LIFETIME_S = 60
CLOCK_SKEW_S = 5
DEFAULT_LIFETIME_S = 30


class CredentialError(KeyServiceError):
    """A caller or signing key file is missing or not an Ed25519 private key."""

    default_reason = "credential_error"
    title = "Credential error"


def body_hash(body: bytes) -> str:
    """SHA-256 of the exact body bytes, base64url without padding (the `bh` claim)."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """The `kid` of a caller key: SHA-256 of its raw 32 bytes, base64url, first 22 characters (128 bits).

    Derived, not configured: the client and the key service compute it from the key itself, so a caller
    with two keys in the callers file (a rotation in progress) is matched to the right one by its token.
    """
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).decode("ascii")[:22]


def mint_token(
    private_key: Ed25519PrivateKey,
    caller_id: str,
    *,
    method: str,
    path: str,
    body: bytes,
    scope: str,
    now: float | None = None,
    lifetime_s: int = DEFAULT_LIFETIME_S,
    jti: str | None = None,
) -> str:
    """A signed token good for one request.

    Args:
        private_key: The caller's Ed25519 key.
        caller_id: The caller id (`iss`), as in the callers file.
        method: HTTP method (`htm`).
        path: Request path without the query string (`htu`).
        body: Exact body bytes (`bh`); empty for none.
        scope: Space-separated scopes.
        now: Unix time to issue at (default: the clock).
        lifetime_s: Seconds until `exp`; the service refuses more than 60.
        jti: Token id (default: 128 random bits); the service accepts each once.
    """
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": caller_id,
        "aud": AUDIENCE,
        "iat": issued,
        "exp": issued + lifetime_s,
        "jti": jti or base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii"),
        "scope": scope,
        "htm": method.upper(),
        "htu": path,
        "bh": body_hash(body),
    }
    headers = {"kid": key_id(private_key.public_key())}
    return jwt.encode(claims, private_key, algorithm="EdDSA", headers=headers)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 PKCS#8 PEM private key.

    Raises:
        CredentialError: missing, unreadable, accessible by group or others, or not an unencrypted Ed25519
            key (the message names the path).
    """
    try:
        key = load_pem_private_key(read_secret(path), password=None)
    except SecretFileError as exc:
        raise CredentialError(str(exc)) from None
    except FileNotFoundError:
        raise CredentialError(
            f"key file {path} does not exist (`pulseseal services up` creates dev keys)"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise CredentialError(f"cannot load key file {path}: {type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CredentialError(f"key file {path} is not an Ed25519 private key")
    return key
