"""The transport-key part of the key service's wire contract (docs/contract.md §4 and §6).

Answers of `GET /v1/transport/key`, `POST /v1/transport/keys/open`, `POST /v1/transport/rotate` and
`DELETE /v1/transport/keys/{key_id}`, the body the open request takes, and the two refusals that only
transport keys have. The server builds its answers with these models and the client validates answers
with them, so a malformed answer is refused before any key is built from it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from keyservice.wire.errors import KeyServiceError, RequestInvalid
from pulseseal.transit import KEY_ID_PATTERN, SUITE_NAME

KeyId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64, pattern=KEY_ID_PATTERN)]
Base64 = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=4096)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class OpenTransportKeysRequest(_Model):
    """`POST /v1/transport/keys/open`: an empty object (the scope says everything)."""


class TransportPublicKeyAnswer(_Model):
    """`GET /v1/transport/key`: the current transport public key."""

    key_id: KeyId
    suite: str = Field(pattern=f"^{SUITE_NAME}$")
    mlkem768: Base64
    x25519: Base64


class TransportPrivateKey(_Model):
    """One transport key's private parts in `POST /v1/transport/keys/open`."""

    key_id: KeyId
    mlkem768_seed: Base64
    x25519: Base64


class TransportPrivateKeysAnswer(_Model):
    """`POST /v1/transport/keys/open`: every transport key not yet retired, current first."""

    keys: list[TransportPrivateKey]


class TransportRotateAnswer(_Model):
    """`POST /v1/transport/rotate`: the new current key."""

    key_id: KeyId


class TransportRetireAnswer(_Model):
    """`DELETE /v1/transport/keys/{key_id}`: the retired key and when it was retired (RFC 3339)."""

    key_id: KeyId
    retired_at: str


class TransportKeyUnknown(KeyServiceError):
    """No transport key has this id (404)."""

    status = 404
    default_reason = "unknown_transport_key"
    title = "Transport key unknown"


class TransportKeyCurrent(KeyServiceError):
    """The current transport key cannot be retired; rotate first (409)."""

    status = 409
    default_reason = "transport_key_current"
    title = "Transport key is current"


def parse_open_request(body: bytes) -> OpenTransportKeysRequest:
    """Validate the open request's body: `{}` (an empty body is taken as `{}`).

    Raises:
        RequestInvalid: anything else.
    """
    try:
        return OpenTransportKeysRequest.model_validate_json(body or b"{}")
    except ValidationError:
        raise RequestInvalid("body must be an empty JSON object {}", reason="invalid_body") from None


def parse_key_id(text: str) -> str:
    """Validate a transport key id from a path.

    Raises:
        RequestInvalid: not 1 to 64 characters of `A-Za-z0-9._-`.
    """
    try:
        return TransportRotateAnswer(key_id=text).key_id
    except ValidationError:
        raise RequestInvalid(
            "key_id must be 1 to 64 characters of A-Za-z0-9._-", reason="invalid_key_id"
        ) from None
