"""The gateway's HTTP edge (FastAPI): routes parse the request, call `EventIntake.accept`, answer.

`POST /v1/events` as docs/contract.md §7, `GET /healthz` (200 while a broker channel is open), Prometheus
`GET /metrics`, and the OpenAPI document at `/openapi.json` with the event schema in its components.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, TypeAdapter
from starlette.requests import ClientDisconnect

from keyservice.client.transport_public import TransportSealer
from producers import metrics
from producers.gateway.auth import TokenVerifier
from producers.gateway.errors import (
    Forbidden,
    GatewayError,
    InvalidBatch,
    ItemError,
    Unauthorized,
    Unavailable,
)
from producers.gateway.service import EventIntake
from producers.publisher import BrokerUnavailable, Publisher
from pulseseal.settings import Settings
from schemas import HealthEvent

log = logging.getLogger("pulseseal.gateway")

RETRY_AFTER_S = 2


class AcceptedBody(BaseModel):
    """202: every event was confirmed by the broker."""

    accepted: int
    event_ids: list[str]


class ItemErrorBody(BaseModel):
    """One problem: the event's 0-based position (null: the body as a whole), the field and the rule."""

    index: int | None
    field: str | None
    message: str


class ErrorsBody(BaseModel):
    """422 (and 403): every problem found; nothing was published."""

    errors: list[ItemErrorBody]


class ProblemBody(BaseModel):
    """Any other refusal: a stable code and one line saying what to do."""

    error: str
    message: str


def create_app(intake: EventIntake) -> FastAPI:
    """The gateway application around an `EventIntake` (its publisher is connected at startup)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await intake.publisher.connect()
        except BrokerUnavailable as exc:
            # Serve anyway: requests get 503 until the broker answers, and /healthz says so.
            log.warning("broker not reachable at startup", extra={"reason": str(exc)})
        yield
        await intake.publisher.close()

    app = FastAPI(title="PulseSeal gateway", version="1", lifespan=lifespan)

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=AcceptedBody,
        response_description="Accepted: the broker confirmed every event of the request.",
        summary="Submit health events",
        description="One event (JSON object), a JSON array of events, or NDJSON; at most 1000 events and "
        "1 MiB. Every event's `user_id` must be the token's `sub`. Answered 202 only after the broker "
        "confirmed every event; all or nothing.",
        responses={
            401: {"model": ProblemBody, "description": "No token, or an invalid or expired one."},
            403: {"model": ErrorsBody, "description": "An event belongs to another user."},
            408: {"model": ProblemBody, "description": "The body did not arrive in time."},
            413: {"model": ProblemBody, "description": "More than 1 MiB or 1000 events."},
            415: {"model": ProblemBody, "description": "Neither JSON nor NDJSON."},
            422: {"model": ErrorsBody, "description": "Invalid events; nothing was published."},
            503: {"model": ProblemBody, "description": "Broker down or slow; retry after `Retry-After`."},
        },
        openapi_extra={"requestBody": _request_body_doc(), "security": [{"userToken": []}]},
    )
    async def post_events(request: Request) -> Response:
        started = time.perf_counter()
        response: Response
        try:
            accepted = await intake.accept(
                authorization=request.headers.get("authorization"),
                content_type=request.headers.get("content-type"),
                content_length=_int_or_none(request.headers.get("content-length")),
                chunks=request.stream(),
            )
        except GatewayError as exc:
            response = _error_response(exc)
        except ClientDisconnect:
            # The client left mid-body; nothing was published and nobody is there to read an answer.
            response = Response(status_code=400)
        else:
            metrics.GATEWAY_EVENTS_ACCEPTED.inc(len(accepted.event_ids))
            response = JSONResponse(
                {"accepted": len(accepted.event_ids), "event_ids": list(accepted.event_ids)}, 202
            )
        metrics.GATEWAY_REQUESTS.labels(status=str(response.status_code)).inc()
        metrics.GATEWAY_REQUEST_SECONDS.observe(time.perf_counter() - started)
        return response

    @app.get("/healthz", summary="Readiness: 200 while the broker is reachable")
    async def healthz() -> JSONResponse:
        if not intake.publisher.is_connected:
            try:
                await intake.publisher.connect()
            except BrokerUnavailable:
                return JSONResponse(
                    {"status": "broker unavailable"}, 503, {"Retry-After": str(RETRY_AFTER_S)}
                )
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def create_app_from_settings(settings: Settings) -> FastAPI:
    """The gateway as configured by `PULSESEAL_*` settings.

    Raises:
        AuthConfigError: the user-token keys are missing or unusable.
    """
    verifier = TokenVerifier.from_files(
        secret_file=settings.credential(settings.gateway_jwt_secret_file, "gateway-jwt.secret"),
        # A secret file that was configured must exist; the dev default may be absent when a JWKS is given.
        secret_required=settings.gateway_jwt_secret_file is not None or settings.gateway_jwks_file is None,
        jwks_file=settings.gateway_jwks_file,
        audience=settings.gateway_jwt_audience,
        leeway_s=settings.gateway_jwt_leeway_s,
    )
    publisher = Publisher(
        settings.amqp_url,
        sealer=TransportSealer.from_settings(settings),
        delivery_limit=settings.delivery_limit,
        confirm_timeout_s=settings.gateway_confirm_timeout_s,
        connect_timeout_s=min(5.0, settings.gateway_confirm_timeout_s),
        app_id="pulseseal-gateway",
    )
    intake = EventIntake(
        verifier,
        publisher,
        body_timeout_s=settings.gateway_body_timeout_s,
        confirm_timeout_s=settings.gateway_confirm_timeout_s,
    )
    return create_app(intake)


def _error_response(exc: GatewayError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    elif isinstance(exc, Unavailable):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    elif exc.status in (408, 413):
        # The rest of the body was not read; the connection cannot carry another request.
        headers["Connection"] = "close"
    if isinstance(exc, InvalidBatch | Forbidden):
        content: dict[str, Any] = {"errors": [_item(e) for e in exc.errors]}
        if isinstance(exc, Forbidden):
            content |= {"error": exc.code, "message": exc.message}
    else:
        content = {"error": exc.code, "message": exc.message}
    return JSONResponse(content, exc.status, headers)


def _item(error: ItemError) -> dict[str, Any]:
    return {"index": error.index, "field": error.field, "message": error.message}


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _request_body_doc() -> dict[str, Any]:
    event = {"$ref": "#/components/schemas/HealthEvent"}
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [event, {"type": "array", "items": event, "maxItems": 1000}]}
            },
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "One HealthEvent per line, at most 1000."}
            },
        },
    }


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    event_schema = TypeAdapter(HealthEvent).json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(event_schema.pop("$defs", {}))
    components["HealthEvent"] = event_schema
    schema["components"]["securitySchemes"] = {
        "userToken": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "The user's JWT: HS256 with the gateway secret or a key of the JWKS file; "
            "its `sub` is the user id every event must carry, its `aud` PULSESEAL_GATEWAY_JWT_AUDIENCE.",
        }
    }
    app.openapi_schema = schema
    return schema
