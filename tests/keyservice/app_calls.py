"""Calling the key service's HTTP API in tests as a caller does (signed, single-use tokens), and checking
its refusals: the shared vocabulary of the key-service API tests."""

from __future__ import annotations

import json

import httpx

from keyservice.client.tokens import mint_token
from keyservice.service import KeyService
from keyservice.wire.audit import AuditRecord
from tests.keyservice.helpers import Credentials

ENCRYPT = "/v1/keys/encrypt"
DECRYPT = "/v1/keys/decrypt"


def body_of(payload: object) -> bytes:
    """A JSON request body, as the client library writes it."""
    return json.dumps(payload).encode()


async def send(
    http: httpx.AsyncClient,
    creds: Credentials,
    role: str,
    method: str,
    path: str,
    payload: object | None = None,
    *,
    scope: str | None = None,
    token: str | None = None,
    body: bytes | None = None,
    query: str = "",
) -> httpx.Response:
    """One request signed by `role` (or with the given token), exactly as a caller sends it."""
    raw = body if body is not None else (b"" if payload is None else body_of(payload))
    if token is None:
        default_scope = {"encryptor": "keys:encrypt", "auditor": "keys:decrypt", "admin": "keys:admin"}
        token = mint_token(
            creds.keys[role],
            role,
            method=method,
            path=path,
            body=raw,
            scope=scope or default_scope.get(role, ""),
        )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await http.request(method, path + query, content=raw, headers=headers)


async def audit_of(service: KeyService, response: httpx.Response) -> list[AuditRecord]:
    """The audit records of the request that got `response`."""
    request_id = response.headers["X-Request-ID"]
    return [r for r in await service.audit.query() if r.request_id == request_id]


def assert_problem(response: httpx.Response, status: int, reason: str) -> None:
    """`response` is an RFC 9457 problem with this status and reason."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["reason"] == reason
    assert problem["type"] == f"urn:pulseseal:problem:{reason}"
    assert {"title", "detail", "request_id"} <= set(problem)


async def assert_refused(service: KeyService, response: httpx.Response, status: int, reason: str) -> None:
    """A problem answer that is also in the audit log (as its own record, or counted into one)."""
    assert_problem(response, status, reason)
    records = await audit_of(service, response)
    if not records:
        # The second unauthenticated refusal of a kind within a second is counted, not copied (edge.py).
        before = [r for r in await service.audit.query() if r.reason == reason and r.counts]
        await service.refusals.flush()
        counted = [r for r in await service.audit.query() if r.reason == reason and r.counts]
        assert len(counted) == len(before) + 1
        assert counted[-1].outcome == "refused"
        assert counted[-1].source == "127.0.0.1"
        return
    assert [(r.outcome, r.reason) for r in records] == [("refused", reason)]
