"""Request bodies of the key service, as pydantic models (unverified input → validated types).

Validation errors become one `RequestInvalid` naming the field, never the value that was sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from keyservice.wire.errors import RequestInvalid, RequestTooLarge
from pulseseal.envelope import MAX_KEY_VERSION
from schemas.rfc3339 import parse_rfc3339 as _parse_strict_rfc3339
from schemas.userids import USER_ID_PATTERN as USER_ID_PATTERN  # re-exported: the wire names it
from schemas.userids import USER_ID_RE as _USER_ID_RE

MAX_KEYS = 1000
MAX_COUNT = 2**53 - 1  # record counts: exact in every JSON reader
MAX_BODY_BYTES = 256 * 1024

UserId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128, pattern=USER_ID_PATTERN)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EncryptRequest(_Body):
    """`POST /v1/keys/encrypt`: the users whose current keys are wanted."""

    # Length is checked after parsing, so that more than MAX_KEYS is a 413, not a 422.
    user_ids: list[UserId] = Field(min_length=1)


class KeyRef(_Body):
    """One key version of one user."""

    user_id: UserId
    version: int = Field(ge=1, le=MAX_KEY_VERSION)


class DecryptRequest(_Body):
    """`POST /v1/keys/decrypt`: key versions wanted and why (the purpose goes to the audit log)."""

    keys: list[KeyRef] = Field(min_length=1)
    purpose: str = Field(min_length=1, max_length=500)


class ReplayReport(_Body):
    """`POST /v1/audit/replays`: how a finished replay of one user went, for the audit log."""

    user_id: UserId
    purpose: str = Field(min_length=1, max_length=500)
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
