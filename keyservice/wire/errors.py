"""What can go wrong in the key service, one small class per failure (house style rule 5).

Each error carries an HTTP `status` and a stable `reason` code: the service answers with them as RFC 9457
problem details, writes the reason to the audit log and counts it in the refusal metric, and the client
turns a problem back into the same class. Messages never contain key bytes, tokens or event data.
"""

from __future__ import annotations

from typing import ClassVar


class KeyServiceError(Exception):
    """Base of every key-service failure.

    Args:
        detail: Human text for operators and callers; never secrets or event data.
        reason: Stable machine code (defaults to the class's).
    """

    status: ClassVar[int] = 500
    default_reason: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Key service error"

    def __init__(self, detail: str = "", *, reason: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.reason = reason or self.default_reason
        # The authenticated (or, for a bad token, the known claimed) caller, for the audit log only.
        self.caller_id: str | None = None


class TokenRejected(KeyServiceError):
    """The caller's token is missing, malformed, expired, replayed or does not match the request (401)."""

    status = 401
    default_reason = "invalid_token"
    title = "Token rejected"


class CallerNotAllowed(KeyServiceError):
    """An authenticated caller lacks the scope or calls from a network it is not allowed (403)."""

    status = 403
    default_reason = "not_allowed"
    title = "Caller not allowed"


class RequestTooLarge(KeyServiceError):
    """The body is over the size limit or names more than 1000 keys (413)."""

    status = 413
    default_reason = "too_large"
    title = "Request too large"


class RequestTimeout(KeyServiceError):
    """The body did not arrive whole in time (408)."""

    status = 408
    default_reason = "body_timeout"
    title = "Request timeout"


class RequestInvalid(KeyServiceError):
    """The body or a path parameter is not what the endpoint takes (422)."""

    status = 422
    default_reason = "invalid_request"
    title = "Invalid request"


class NotFound(KeyServiceError):
    """No such endpoint (404)."""

    status = 404
    default_reason = "not_found"
    title = "Not found"


class MethodNotAllowed(KeyServiceError):
    """The endpoint exists but not with this method (405)."""

    status = 405
    default_reason = "method_not_allowed"
    title = "Method not allowed"


class KeyShredded(KeyServiceError):
    """The user was crypto-shredded; no key is handed out or created until an admin reinstates them (409)."""

    status = 409
    default_reason = "shredded"
    title = "User shredded"


class KeyUnknown(KeyServiceError):
    """The asked-for key version never existed."""

    status = 404
    default_reason = "unknown"
    title = "Key unknown"


class UserNotShredded(KeyServiceError):
    """Reinstate was asked for a user who is not shredded (409)."""

    status = 409
    default_reason = "not_shredded"
    title = "User not shredded"


class KeyServiceUnavailable(KeyServiceError):
    """The key service or its store cannot answer now; retrying later may succeed (503)."""

    status = 503
    default_reason = "unavailable"
    title = "Key service unavailable"


class KeyUnwrapError(KeyServiceError):
    """A stored key does not open under the master key (tampered, or wrapped under another master key).

    One opaque error on purpose: it never says which check failed.
    """

    status = 500
    default_reason = "key_store_integrity"
    title = "Stored key failed its integrity check"


class InsecureTransport(KeyServiceError):
    """Plain HTTP was asked for with a non-loopback address."""

    default_reason = "insecure_transport"
    title = "Plain HTTP is allowed only on loopback"


class StartupRefused(KeyServiceError):
    """The key service will not start: the message is one line naming what is wrong and what to do."""

    default_reason = "startup_refused"
    title = "Key service refused to start"


class LedgerError(KeyServiceError):
    """The shred ledger cannot be read, verified or appended to."""

    status = 503
    default_reason = "ledger_error"
    title = "Shred ledger error"


class TooManyRefusals(KeyServiceError):
    """This peer's refused requests exceeded the refusal rate limit (429, with `Retry-After`).

    Args:
        detail: Human text.
        retry_after_s: Whole seconds after which the peer's next request is judged normally again.
    """

    status = 429
    default_reason = "rate_limited"
    title = "Too many refused requests"

    def __init__(self, detail: str = "", *, retry_after_s: int = 1, reason: str | None = None) -> None:
        super().__init__(detail, reason=reason)
        self.retry_after_s = retry_after_s
