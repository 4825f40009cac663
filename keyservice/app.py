"""The key service's HTTP edge (docs/contract.md §6): each route reads the body, authenticates, parses, calls one
service function and answers JSON, or an RFC 9457 problem that is also written to the audit log."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyservice.auth import RequestFacts, VerifiedCaller
from keyservice.openapi import openapi_document
from keyservice.service import KeyService
from keyservice.shrednotices import stream_route
from keyservice.transport_keys import TransportKeyService
from keyservice.usage import SealBudget
from keyservice.wire.errors import (
    KeyServiceError,
    MethodNotAllowed,
    NotFound,
    RequestInvalid,
    TooManyRefusals,
)
from keyservice.wire.models import (
    MAX_BODY_BYTES,
    DecryptRequest,
    EncryptRequest,
    Problem,
    ReplayReport,
    parse_body,
    parse_rfc3339,
    parse_user_id,
)
from keyservice.wire.shreds import PATH as SHREDS_PATH
from keyservice.wire.transport import parse_key_id, parse_open_request
from keyservice.wire.usage import DEFAULT_SEAL_BUDGET, USAGE_PATH, UsageReport

log = logging.getLogger(__name__)
_NO_STORE = {"Cache-Control": "no-store"}


@dataclass(slots=True)
class _Call:
    """One request on its way through: what the audit record of a refusal can name."""

    request: Request
    body: bytes
    request_id: str
    user_ids: list[str] = field(default_factory=list)
    caller_id: str | None = None
    verified: bool = False


Handler = Callable[[VerifiedCaller, _Call], Awaitable[BaseModel]]


def _json(payload: BaseModel | dict[str, Any], request_id: str, status: int = 200) -> Response:
    headers = {**_NO_STORE, "X-Request-ID": request_id}
    if isinstance(payload, BaseModel):
        body = payload.model_dump_json().encode()
    else:
        body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def problem(error: KeyServiceError, request_id: str) -> Response:
    """An RFC 9457 problem response for `error`."""
    payload = Problem(
        type=f"urn:pulseseal:problem:{error.reason}",
        title=error.title,
        status=error.status,
        detail=error.detail,
        reason=error.reason,
        request_id=request_id,
    )
    headers = {**_NO_STORE, "X-Request-ID": request_id}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if error.status == 503:
        headers["Retry-After"] = "1"
    if isinstance(error, TooManyRefusals):
        headers["Retry-After"] = str(error.retry_after_s)
    return Response(
        payload.model_dump_json().encode(),
        status_code=error.status,
        media_type="application/problem+json",
        headers=headers,
    )


def create_app(service: KeyService, *, seal_budget: int = DEFAULT_SEAL_BUDGET) -> Starlette:
    """The ASGI app over a ready `KeyService` (whoever opened the service closes it); a key version that
    reaches `seal_budget` seals is rotated automatically (keyservice/usage.py)."""
    budget = SealBudget(service, seal_budget)

    async def _refusal(action: str, exc: KeyServiceError, call: _Call, peer: str) -> Response:
        # Written to the audit log before the answer leaves; an answer whose refusal cannot be recorded
        # is a 503, never a silent gap in the audit trail.
        # Only what the peer got wrong counts against its refusal budget; the service's own failures (5xx)
        # are not the caller's to pay for.
        error = service.edge.limit(peer, exc) if exc.status < 500 else exc
        try:
            own_record = await service.refuse(
                action, error, call.request_id, call.user_ids, source=peer, authenticated=call.verified
            )
        except KeyServiceError as unrecorded:
            log.error("%s refused but not recorded (request %s)", action, call.request_id)
            return problem(unrecorded, call.request_id)
        # A refusal counted into a record (a flood's) gets no log line of its own either: one line per junk
        # request would grow the log without bound and cost a third of the refusal's time.
        log.log(
            logging.INFO if own_record else logging.DEBUG,
            "%s refused: %s (request %s)",
            action,
            error.reason,
            call.request_id,
        )
        return problem(error, call.request_id)

    def endpoint(action: str, scope: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            started = time.perf_counter()
            call = _Call(request, b"", uuid.uuid4().hex)
            peer = request.client.host if request.client else ""
            try:
                service.edge.admit(peer)
                call.body = await service.edge.read_body(request, MAX_BODY_BYTES)
                facts = RequestFacts(
                    request.method, request.url.path, call.body, peer, request.headers.get("authorization")
                )
                caller = await service.authenticate(facts, scope)
                call.caller_id, call.verified = caller.caller_id, True
                response = _json(await handler(caller, call), call.request_id)
                log.debug("%s granted to %s (request %s)", action, caller.caller_id, call.request_id)
            except KeyServiceError as exc:
                exc.caller_id = exc.caller_id or call.caller_id
                response = await _refusal(action, exc, call, peer)
            except Exception as exc:
                # The message of an unexpected error could carry data; log its type only unless debugging.
                log.error(
                    "%s failed: unexpected %s (request %s)",
                    action,
                    type(exc).__name__,
                    call.request_id,
                    exc_info=os.environ.get("PULSESEAL_DEBUG") == "1",
                )
                error = KeyServiceError("internal error")
                error.caller_id = call.caller_id
                response = await _refusal(action, error, call, peer)
            service.metrics.latency.labels(action).observe(time.perf_counter() - started)
            return response

        return route

    async def encrypt(caller: VerifiedCaller, call: _Call) -> BaseModel:
        return await service.encrypt(caller, parse_body(EncryptRequest, call.body), call.request_id)

    async def decrypt(caller: VerifiedCaller, call: _Call) -> BaseModel:
        return await service.decrypt(caller, parse_body(DecryptRequest, call.body), call.request_id)

    async def usage(caller: VerifiedCaller, call: _Call) -> BaseModel:
        report = parse_body(UsageReport, call.body)
        call.user_ids = sorted({entry.user_id for entry in report.usage})
        return await budget.record(caller, report, call.request_id)

    async def replay(caller: VerifiedCaller, call: _Call) -> BaseModel:
        report = parse_body(ReplayReport, call.body)
        call.user_ids = [report.user_id]
        return await service.record_replay(caller, report, call.request_id)

    def _path_user(call: _Call) -> str:
        user_id = parse_user_id(call.request.path_params["user_id"])
        call.user_ids = [user_id]
        return user_id

    async def rotate(caller: VerifiedCaller, call: _Call) -> BaseModel:
        return await service.rotate(caller, _path_user(call), call.request_id)

    async def shred(caller: VerifiedCaller, call: _Call) -> BaseModel:
        return await service.shred(caller, _path_user(call), call.request_id)

    async def reinstate(caller: VerifiedCaller, call: _Call) -> BaseModel:
        return await service.reinstate(caller, _path_user(call), call.request_id)

    async def audit(caller: VerifiedCaller, call: _Call) -> BaseModel:
        params = call.request.query_params
        unknown = set(params) - {"user_id", "since", "limit"}
        if unknown:
            raise RequestInvalid(f"unknown query parameter {sorted(unknown)[0]!r}")
        user_id = parse_user_id(params["user_id"]) if "user_id" in params else None
        since = parse_rfc3339(params["since"], "since") if "since" in params else None
        if since is not None and since.timestamp() < 0:
            raise RequestInvalid("since must not be before 1970-01-01T00:00:00Z")
        limit_text = params.get("limit", "1000")
        # isascii: str.isdigit is also true for '²', which int() refuses (a 500 before).
        if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= 10_000:
            raise RequestInvalid("limit must be an integer from 1 to 10000")
        return await service.read_audit(
            caller, call.request_id, user_id=user_id, since=since, limit=int(limit_text)
        )

    transport = TransportKeyService(service)

    async def transport_open(caller: VerifiedCaller, call: _Call) -> BaseModel:
        parse_open_request(call.body)
        return await transport.open_keys(caller, call.request_id)

    async def transport_rotate(caller: VerifiedCaller, call: _Call) -> BaseModel:
        return await transport.rotate(caller, call.request_id)

    async def transport_retire(caller: VerifiedCaller, call: _Call) -> BaseModel:
        key_id = parse_key_id(call.request.path_params["key_id"])
        return await transport.retire(caller, key_id, call.request_id)

    async def transport_key(request: Request) -> Response:
        # No token: the public key is what every producer seals to, and it is not a secret.
        request_id = uuid.uuid4().hex
        try:
            return _json(await transport.public_key(request_id), request_id)
        except KeyServiceError as exc:
            await service.refuse("transport_key", exc, request_id)
            return problem(exc, request_id)

    async def healthz(request: Request) -> Response:
        ready, details = await service.health()
        return _json(details, uuid.uuid4().hex, 200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    document = json.dumps(openapi_document(), separators=(",", ":")).encode()

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        error = MethodNotAllowed("method not allowed") if status == 405 else NotFound("no such endpoint")
        call = _Call(request, b"", uuid.uuid4().hex)
        return await _refusal("unrouted", error, call, request.client.host if request.client else "")

    routes = [
        Route("/v1/keys/encrypt", endpoint("encrypt", "keys:encrypt", encrypt), methods=["POST"]),
        Route("/v1/keys/decrypt", endpoint("decrypt", "keys:decrypt", decrypt), methods=["POST"]),
        Route(USAGE_PATH, endpoint("usage", "keys:encrypt", usage), methods=["POST"]),
        Route("/v1/users/{user_id}/rotate", endpoint("rotate", "keys:admin", rotate), methods=["POST"]),
        Route("/v1/users/{user_id}", endpoint("shred", "keys:admin", shred), methods=["DELETE"]),
        Route(
            "/v1/users/{user_id}/reinstate", endpoint("reinstate", "keys:admin", reinstate), methods=["POST"]
        ),
        Route("/v1/audit", endpoint("audit", "keys:admin", audit), methods=["GET"]),
        Route("/v1/audit/replays", endpoint("replay", "keys:decrypt", replay), methods=["POST"]),
        Route("/v1/transport/key", transport_key, methods=["GET"]),
        Route(
            "/v1/transport/keys/open",
            endpoint("transport_open", "transport:open", transport_open),
            methods=["POST"],
        ),
        Route(
            "/v1/transport/rotate",
            endpoint("transport_rotate", "keys:admin", transport_rotate),
            methods=["POST"],
        ),
        Route(
            "/v1/transport/keys/{key_id}",
            endpoint("transport_retire", "keys:admin", transport_retire),
            methods=["DELETE"],
        ),
        Route(
            SHREDS_PATH,
            stream_route(service.erasure.notices, service.authenticate, service.refuse, problem),
            methods=["GET"],
        ),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
