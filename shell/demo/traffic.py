"""Synthetic wearable traffic sent through the gateway, as apps would send it: per user, with user JWTs.

Each request carries up to `per_request` events of one user (the gateway demands that every event's
`user_id` equals the token's `sub`). Requests run `concurrency` at a time over one HTTP/1.1 pool.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from pulseseal.retry import Backoff, retry, retry_after_s

TOKEN_TTL_S = 3600


class _Busy(Exception):
    """A 503: try again after the gateway's `Retry-After`."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__("gateway busy")
        self.response = response
        self.retry_after_s = retry_after_s(response.headers.get("Retry-After"))


# Without a `Retry-After`, about a second, as the gateway usually asks.
_BACKOFF = Backoff(initial_s=1.0, cap_s=1.0, jitter=0.0)


async def _post_until_taken(
    client: httpx.AsyncClient, body: bytes, token: str, report: SendReport
) -> tuple[httpx.Response, float]:
    """POST one request, again after each 503 (up to 20 times); the last answer and when it was sent."""
    sent = time.time()

    async def post() -> httpx.Response:
        nonlocal sent
        sent = time.time()
        response = await client.post(
            "/v1/events",
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
        )
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        if response.status_code == 503:
            raise _Busy(response)
        return response

    try:
        response = await retry(post, on=lambda exc: isinstance(exc, _Busy), backoff=_BACKOFF, attempts=20)
    except _Busy as busy:
        response = busy.response
    return response, sent


def user_token(
    secret: bytes, user_id: str, *, audience: str = "authenticated", now: float | None = None
) -> str:
    """An HS256 user token as Supabase issues them: `sub`, `aud`, `iat`, `exp`, `role`."""
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": user_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + TOKEN_TTL_S,
        "role": "authenticated",
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def read_secret(path: Path) -> bytes:
    """The HS256 key as the gateway reads it: the file's text, whitespace stripped, UTF-8."""
    return path.read_text().strip().encode()


@dataclass
class SendReport:
    """What the gateway answered: accepted events with the time their request was sent."""

    sent_at: dict[str, float] = field(default_factory=dict)
    accepted: int = 0
    refused: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0


def requests_for(
    events: Sequence[dict[str, Any]], per_request: int
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Group events by user, then cut each user's events into requests of at most `per_request`."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_user.setdefault(event["user_id"], []).append(event)
    requests = []
    for user, own in by_user.items():
        for start in range(0, len(own), per_request):
            requests.append((user, own[start : start + per_request]))
    return requests


async def send(
    gateway_url: str,
    secret: bytes,
    requests: Sequence[tuple[str, list[dict[str, Any]]]],
    *,
    concurrency: int = 16,
    on_accepted: Callable[[int], None] = lambda n: None,
) -> SendReport:
    """POST every request as NDJSON; retry a 503 after its `Retry-After`. Returns what was accepted."""
    report = SendReport(started=time.time())
    tokens: dict[str, str] = {}
    queue: asyncio.Queue[tuple[str, list[dict[str, Any]]]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=gateway_url, limits=limits, timeout=30, trust_env=False) as client:

        async def worker() -> None:
            while not queue.empty():
                user, events = queue.get_nowait()
                token = tokens.get(user) or tokens.setdefault(user, user_token(secret, user))
                body = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
                response, sent = await _post_until_taken(client, body, token, report)
                if response.status_code == 202:
                    for event in events:
                        report.sent_at[event["event_id"]] = sent
                    report.accepted += len(events)
                    on_accepted(len(events))
                else:
                    report.refused += len(events)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    report.finished = time.time()
    return report
