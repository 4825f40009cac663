"""The key service's error answers (RFC 9457 problems) as the client's exceptions, by status and reason."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from keyservice.wire.errors import (
    CallerNotAllowed,
    KeyServiceError,
    KeyServiceUnavailable,
    KeyShredded,
    NotFound,
    RequestInvalid,
    RequestTooLarge,
    TokenRejected,
    UserNotShredded,
)
from keyservice.wire.models import Problem

TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
_BY_STATUS: dict[int, type[KeyServiceError]] = {
    401: TokenRejected,
    403: CallerNotAllowed,
    404: NotFound,
    413: RequestTooLarge,
    422: RequestInvalid,
}


def error_from(response: httpx.Response) -> KeyServiceError:
    """The exception a non-200 answer means (a body that is not a problem: its status alone)."""
    try:
        problem = Problem.model_validate_json(response.content)
    except ValidationError:
        detail, reason = f"HTTP {response.status_code}", ""
    else:
        detail, reason = problem.detail, problem.reason
    status = response.status_code
    if status == 409:
        kind: type[KeyServiceError] = UserNotShredded if reason == "not_shredded" else KeyShredded
    elif status in TRANSIENT_STATUS:
        kind = KeyServiceUnavailable
    else:
        kind = _BY_STATUS.get(status, KeyServiceError)
    return kind(detail or f"HTTP {status}", reason=reason or None)
