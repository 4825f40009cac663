"""The key service's OpenAPI 3.1 description (served at `GET /openapi.json`, checked by schemathesis).

Every body and answer schema is generated from the wire models (`keyservice/wire/`), so the document, the
server and the client cannot drift apart; only the path table — which route takes which body and gives
which answers — is written here. The fuzzing tests hold the service to it: no answer may fall outside it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from keyservice.wire.audit import AuditAnswer, AuditRecord
from keyservice.wire.models import (
    MAX_BODY_BYTES,
    MAX_KEYS,
    USER_ID_PATTERN,
    DecryptAnswer,
    DecryptRequest,
    EncryptAnswer,
    EncryptRequest,
    Problem,
    ReceiptAnswer,
    ReplayReport,
    VersionAnswer,
)
from keyservice.wire.transport import (
    OpenTransportKeysRequest,
    TransportPrivateKeysAnswer,
    TransportPublicKeyAnswer,
    TransportRetireAnswer,
    TransportRotateAnswer,
)
from keyservice.wire.usage import USAGE_PATH, UsageAnswer, UsageReport
from pulseseal.transit import KEY_ID_PATTERN, SUITE_NAME

_REQUESTS: tuple[type[BaseModel], ...] = (
    EncryptRequest,
    DecryptRequest,
    ReplayReport,
    OpenTransportKeysRequest,
    UsageReport,
)
_ANSWERS: tuple[type[BaseModel], ...] = (
    EncryptAnswer,
    DecryptAnswer,
    VersionAnswer,
    ReceiptAnswer,
    AuditRecord,
    AuditAnswer,
    UsageAnswer,
    Problem,
    TransportPublicKeyAnswer,
    TransportPrivateKeysAnswer,
    TransportRotateAnswer,
    TransportRetireAnswer,
)
_USER_ID: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": USER_ID_PATTERN}
_PATH_USER = {"name": "user_id", "in": "path", "required": True, "schema": _USER_ID}
_KEY_ID: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": KEY_ID_PATTERN}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _ref(Problem)}}}


def _answer(description: str, model: type[BaseModel]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


# Answers every authenticated route can give.
_COMMON = {
    "401": _problem("No token, or a bad, expired or replayed one."),
    "403": _problem("The caller lacks the scope, or calls from a network it is not allowed."),
    "408": _problem("The body did not arrive within the body timeout (body_timeout)."),
    "413": _problem(f"Body over {MAX_BODY_BYTES // 1024} KiB, or more than {MAX_KEYS} keys."),
    "422": _problem("A body, path or query parameter that the endpoint does not take."),
    "429": _problem(
        "This address made more refused requests than the refusal rate limit allows (rate_limited); "
        "see Retry-After."
    ),
    "500": _problem("A stored key failed its integrity check (key_store_integrity)."),
    "503": _problem("The key store, the audit log or the shred ledger is unavailable."),
}


def _operation(
    summary: str,
    scope: str,
    ok: dict[str, Any],
    *,
    body: type[BaseModel] | None = None,
    extra: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "description": f"Scope `{scope}`.",
        "security": [{"callerToken": [scope]}],
        "responses": {"200": ok, **_COMMON, **(extra or {})},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if parameters:
        operation["parameters"] = parameters
    return operation


def _schemas() -> dict[str, Any]:
    """Component schemas of every wire model, as they validate: the server validates the requests, the
    client validates the answers."""
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in (*_REQUESTS, *_ANSWERS)]
    _, document = models_json_schema(modes, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = document["$defs"]
    # The request bodies' list limits are checked after parsing (so that too many is a 413, not a 422);
    # the document states them all the same.
    schemas["EncryptRequest"]["properties"]["user_ids"]["maxItems"] = MAX_KEYS
    schemas["DecryptRequest"]["properties"]["keys"]["maxItems"] = MAX_KEYS
    return schemas


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the key service."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "PulseSeal key service",
            "version": "1",
            "description": "Per-user data keys for authenticated callers (docs/contract.md §6; docs/keyservice.md).",
        },
        "paths": {
            "/v1/keys/encrypt": {
                "post": _operation(
                    "Current key per user, created on first use",
                    "keys:encrypt",
                    _answer("Keys, and the users refused because they are shredded.", EncryptAnswer),
                    body=EncryptRequest,
                )
            },
            "/v1/keys/decrypt": {
                "post": _operation(
                    "Given key versions; never creates one",
                    "keys:decrypt",
                    _answer("Keys found, and the ones missing with why.", DecryptAnswer),
                    body=DecryptRequest,
                )
            },
            USAGE_PATH: {
                "post": _operation(
                    "Report seals per key version; a version that reaches the seal budget is rotated",
                    "keys:encrypt",
                    _answer("The keys rotated because of this report.", UsageAnswer),
                    body=UsageReport,
                )
            },
            "/v1/audit/replays": {
                "post": _operation(
                    "Record a finished replay in the audit log",
                    "keys:decrypt",
                    _answer("The audit record written.", AuditRecord),
                    body=ReplayReport,
                )
            },
            "/v1/users/{user_id}/rotate": {
                "post": _operation(
                    "Add a key version and make it current",
                    "keys:admin",
                    _answer("The new current version.", VersionAnswer),
                    parameters=[_PATH_USER],
                    extra={"409": _problem("The user is shredded.")},
                )
            },
            "/v1/users/{user_id}": {
                "delete": _operation(
                    "Crypto-shred the user: destroy every key version",
                    "keys:admin",
                    _answer("The signed erasure receipt.", ReceiptAnswer),
                    parameters=[_PATH_USER],
                )
            },
            "/v1/users/{user_id}/reinstate": {
                "post": _operation(
                    "Let a shredded user have keys again",
                    "keys:admin",
                    _answer("The new current version.", VersionAnswer),
                    parameters=[_PATH_USER],
                    extra={"409": _problem("The user is not shredded.")},
                )
            },
            "/v1/audit": {
                "get": _operation(
                    "Audit records, oldest first",
                    "keys:admin",
                    _answer("The records.", AuditAnswer),
                    parameters=[
                        {"name": "user_id", "in": "query", "required": False, "schema": _USER_ID},
                        {"name": "since", "in": "query", "required": False, "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10_000},
                        },
                    ],
                )
            },
            "/v1/transport/key": {
                "get": {
                    "summary": "The current transport public key, created on first use",
                    "description": (
                        "No token: what every producer seals broker messages to (HPKE, base mode, "
                        f"{SUITE_NAME}). `mlkem768` is the 1184-byte ML-KEM-768 public key, `x25519` the "
                        "32-byte X25519 one."
                    ),
                    "security": [],
                    "responses": {
                        "200": _answer("The current public key.", TransportPublicKeyAnswer),
                        "500": _COMMON["500"],
                        "503": _COMMON["503"],
                    },
                }
            },
            "/v1/transport/keys/open": {
                "post": _operation(
                    "Private parts of every transport key not yet retired, current first",
                    "transport:open",
                    _answer(
                        "`mlkem768_seed` is the 64-byte seed of `MLKEM768PrivateKey.from_seed_bytes`, "
                        "`x25519` the 32-byte raw private key.",
                        TransportPrivateKeysAnswer,
                    ),
                    body=OpenTransportKeysRequest,
                )
            },
            "/v1/transport/rotate": {
                "post": _operation(
                    "A new current transport key; older ones still open until retired",
                    "keys:admin",
                    _answer("The new current key.", TransportRotateAnswer),
                )
            },
            "/v1/transport/keys/{key_id}": {
                "delete": _operation(
                    "Retire (destroy) a transport key that is not current",
                    "keys:admin",
                    _answer("The retired key.", TransportRetireAnswer),
                    parameters=[{"name": "key_id", "in": "path", "required": True, "schema": _KEY_ID}],
                    extra={
                        "404": _problem("No transport key has this id (unknown_transport_key)."),
                        "409": _problem("It is the current key (transport_key_current): rotate first."),
                    },
                )
            },
            "/healthz": {
                "get": {
                    "summary": "Readiness: the key store answers and is durable",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Ready.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": {
                            "description": "Not ready.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "callerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT (EdDSA), one per request: htm, htu and bh bind it to the request",
                }
            },
        },
    }
