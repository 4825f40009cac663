"""Why the gateway refused a request; each error knows its HTTP status and a value-free message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ItemError:
    """One problem with one event of a request: its 0-based `index` (None: the body as a whole)."""

    index: int | None
    field: str | None
    message: str


class GatewayError(Exception):
    """A request the gateway answers with an error status. `message` never holds a value or a token."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(GatewayError):
    """No token, or one that is malformed, expired, badly signed or for another audience."""

    status = 401
    code = "invalid_token"


class Forbidden(GatewayError):
    """A valid token, but for another user than an event's `user_id`."""

    status = 403
    code = "forbidden"

    def __init__(self, message: str, errors: Sequence[ItemError] = ()) -> None:
        super().__init__(message)
        self.errors = tuple(errors)


class BodyTimeout(GatewayError):
    """The body did not arrive in time (a slow or stalled client)."""

    status = 408
    code = "body_timeout"


class BodyTooLarge(GatewayError):
    """More than 1 MiB or more than 1000 events."""

    status = 413
    code = "too_large"


class UnsupportedMediaType(GatewayError):
    """A content type other than JSON or NDJSON."""

    status = 415
    code = "unsupported_media_type"


class InvalidBatch(GatewayError):
    """At least one event is invalid; `errors` lists every problem found, nothing is published."""

    status = 422
    code = "invalid_events"

    def __init__(self, errors: Sequence[ItemError]) -> None:
        super().__init__(f"{len(errors)} problem(s) in the request")
        self.errors = tuple(errors)


class Unavailable(GatewayError):
    """The broker is down or did not confirm in time; nothing is reported accepted."""

    status = 503
    code = "broker_unavailable"
