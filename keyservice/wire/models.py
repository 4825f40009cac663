"""The key service's requests and answers as pydantic models, with the limits they carry (docs/contract.md §6).

The server validates request bodies into these types (a validation error becomes one `RequestInvalid`
naming the field, never the value sent) and builds every answer from them; the client parses every answer
back into them (`parse_answer`), so a malformed answer is one clear `KeyServiceError`, never a `KeyError`.
The OpenAPI document is generated from the same models (keyservice/openapi.py).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    model_serializer,
)

from keyservice.wire.errors import KeyServiceError, RequestInvalid, RequestTooLarge
from pulseseal.envelope import MAX_KEY_VERSION
from schemas.rfc3339 import parse_rfc3339 as _parse_strict_rfc3339
from schemas.userids import USER_ID_PATTERN as USER_ID_PATTERN  # re-exported: the wire names it
from schemas.userids import USER_ID_RE as _USER_ID_RE

MAX_KEYS = 1000
MAX_COUNT = 2**53 - 1  # record counts: exact in every JSON reader
MAX_BODY_BYTES = 256 * 1024
MAX_PURPOSE = 500

UserId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128, pattern=USER_ID_PATTERN)]
KeyVersion = Annotated[int, Field(ge=1, le=MAX_KEY_VERSION)]


class MissingReason(StrEnum):
    """Why a key was not handed out."""

    SHREDDED = "shredded"  # destroyed by a crypto-shred; never coming back
    UNKNOWN = "unknown"  # that version never existed


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EncryptRequest(_Body):
    """`POST /v1/keys/encrypt`: the users whose current keys are wanted."""

    # Length is checked after parsing, so that more than MAX_KEYS is a 413, not a 422.
    user_ids: list[UserId] = Field(min_length=1)


class KeyRef(_Body):
    """One key version of one user."""

    user_id: UserId
    version: KeyVersion


class DecryptRequest(_Body):
    """`POST /v1/keys/decrypt`: key versions wanted and why (the purpose goes to the audit log)."""

    keys: list[KeyRef] = Field(min_length=1)
    purpose: str = Field(min_length=1, max_length=MAX_PURPOSE)


class ReplayReport(_Body):
    """`POST /v1/audit/replays`: how a finished replay of one user went, for the audit log."""

    user_id: UserId
    purpose: str = Field(min_length=1, max_length=MAX_PURPOSE)
    opened: int = Field(ge=0, le=MAX_COUNT)
    failed: int = Field(ge=0, le=MAX_COUNT)
    unreadable: int = Field(ge=0, le=MAX_COUNT)


_Model = TypeVar("_Model", bound=_Body)


def parse_body(model: type[_Model], body: bytes) -> _Model:
    """Validate a JSON body against `model`.

    Raises:
        RequestTooLarge: the body is over `MAX_BODY_BYTES` or lists more than `MAX_KEYS` entries.
        RequestInvalid: not JSON, or not the model; the message names the field only.
    """
    if len(body) > MAX_BODY_BYTES:
        raise RequestTooLarge(f"body over {MAX_BODY_BYTES} bytes")
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise RequestInvalid(f"{field}: {first['msg']}", reason="invalid_body") from None
    count = len(parsed.user_ids) if isinstance(parsed, EncryptRequest) else len(getattr(parsed, "keys", ()))
    if count > MAX_KEYS:
        raise RequestTooLarge(f"at most {MAX_KEYS} keys per request, got {count}", reason="too_many_keys")
    return parsed


def parse_user_id(text: str) -> str:
    """Validate a user id from a path or query parameter.

    Raises:
        RequestInvalid: not 1 to 128 characters of `A-Za-z0-9._:@-`.
    """
    if not _USER_ID_RE.fullmatch(text):
        raise RequestInvalid(
            "user_id must be 1 to 128 characters of A-Za-z0-9._:@-", reason="invalid_user_id"
        )
    return text


def parse_rfc3339(text: str, field: str) -> datetime:
    """Parse an RFC 3339 time with an offset.

    Raises:
        RequestInvalid: not RFC 3339 or no offset.
    """
    try:
        return _parse_strict_rfc3339(text)
    except ValueError:
        raise RequestInvalid(
            f"{field} must be an RFC 3339 time with an offset", reason="invalid_time"
        ) from None


# --- answers ---


class _Answer(BaseModel):
    # Not strict: answers are parsed from JSON, where an enum is a string.
    model_config = ConfigDict(extra="forbid", frozen=True)


class GrantedKey(_Answer):
    """One data key handed out: standard base64 with padding, to be held at most `expires_in` seconds."""

    user_id: UserId
    version: KeyVersion
    key: str = Field(json_schema_extra={"contentEncoding": "base64"})
    expires_in: int = Field(ge=1)


class RefusedUser(_Answer):
    """A user who gets no current key."""

    user_id: UserId
    reason: Literal[MissingReason.SHREDDED]


class EncryptAnswer(_Answer):
    """`POST /v1/keys/encrypt`: the current key per user, and the users refused."""

    keys: list[GrantedKey]
    refused: list[RefusedUser]


class MissingKey(_Answer):
    """A key version not handed out; a shredded one says when it was destroyed."""

    user_id: UserId
    version: int
    reason: MissingReason
    destroyed_at: str | None = None

    @model_serializer(mode="wrap")
    def _date_only_when_shredded(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A shredded version always says when it was destroyed (null: the store kept no date); an unknown
        # one has no such field at all.
        document: dict[str, Any] = handler(self)
        if self.reason != MissingReason.SHREDDED:
            document.pop("destroyed_at", None)
        return document


class DecryptAnswer(_Answer):
    """`POST /v1/keys/decrypt`: the versions found, and the missing ones with why."""

    keys: list[GrantedKey]
    missing: list[MissingKey]


class VersionAnswer(_Answer):
    """`rotate` and `reinstate`: the user's new current version."""

    user_id: UserId
    version: KeyVersion


class ReceiptAnswer(_Answer):
    """`DELETE /v1/users/{user_id}`: the erasure receipt, signed by the key service (keyservice/receipts.py)."""

    user_id: UserId
    versions_destroyed: list[int]
    destroyed_at: str
    backups_unreadable_after: str
    signature: str


class Problem(_Answer):
    """An RFC 9457 problem: every refusal and failure."""

    type: str
    title: str
    status: int
    detail: str
    reason: str
    request_id: str


_Parsed = TypeVar("_Parsed", bound=BaseModel)


def parse_answer(model: type[_Parsed], body: bytes) -> _Parsed:
    """Parse a key-service answer, as a client does.

    Raises:
        KeyServiceError: the answer is not JSON or not `model` (reason `bad_response`; names no value).
    """
    try:
        return model.model_validate_json(body)
    except ValidationError:
        raise KeyServiceError(
            f"the key service sent a malformed {model.__name__}", reason="bad_response"
        ) from None
