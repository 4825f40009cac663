"""The key service's OpenAPI 3.1 description (served at `GET /openapi.json`, checked by schemathesis).

Written by hand next to the routes it describes (the service is plain Starlette): every route, every body
it takes, every answer it can give — the JSON documents and the RFC 9457 problems alike. The fuzzing
tests hold the service to it: no answer may fall outside it.
"""

from __future__ import annotations

from typing import Any

from keyservice.wire.models import MAX_COUNT, MAX_KEYS, USER_ID_PATTERN

_USER_ID: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": USER_ID_PATTERN}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _PROBLEM_REF}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# Answers every authenticated route can give.
_COMMON = {
    "401": _problem("No token, or a bad, expired or replayed one."),
    "403": _problem("The caller lacks the scope, or calls from a network it is not allowed."),
    "408": _problem("The body did not arrive within the body timeout (body_timeout)."),
    "413": _problem("Body over 256 KiB, or more than 1000 keys."),
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
    body: str | None = None,
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
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


_PATH_USER = {"name": "user_id", "in": "path", "required": True, "schema": _USER_ID}


def _key() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["user_id", "version", "key", "expires_in"],
        "properties": {
            "user_id": _USER_ID,
            "version": {"type": "integer", "minimum": 1},
            "key": {"type": "string", "contentEncoding": "base64"},
            "expires_in": {"type": "integer", "minimum": 1},
        },
        "additionalProperties": False,
    }


def _schemas() -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}
    purpose = {"type": "string", "minLength": 1, "maxLength": 500}
    return {
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail", "reason", "request_id"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "reason": {"type": "string"},
                "request_id": {"type": "string"},
            },
        },
        "EncryptRequest": {
            "type": "object",
            "required": ["user_ids"],
            "properties": {
                "user_ids": {"type": "array", "minItems": 1, "maxItems": MAX_KEYS, "items": _USER_ID}
            },
            "additionalProperties": False,
        },
        "DecryptRequest": {
            "type": "object",
            "required": ["keys", "purpose"],
            "properties": {
                "keys": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_KEYS,
                    "items": {
                        "type": "object",
                        "required": ["user_id", "version"],
                        "properties": {
                            "user_id": _USER_ID,
                            "version": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                        },
                        "additionalProperties": False,
                    },
                },
                "purpose": purpose,
            },
            "additionalProperties": False,
        },
        "ReplayReport": {
            "type": "object",
            "required": ["user_id", "purpose", "opened", "failed", "unreadable"],
            "properties": {
                "user_id": _USER_ID,
                "purpose": purpose,
                "opened": count,
                "failed": count,
                "unreadable": count,
            },
            "additionalProperties": False,
        },
        "AuditRecord": {
            "type": "object",
            "required": [
                "time",
                "caller",
                "action",
                "user_ids",
                "versions",
                "outcome",
                "request_id",
                "purpose",
                "reason",
            ],
            "properties": {
                "time": {"type": "string"},
                "caller": {"type": ["string", "null"]},
                "action": {"type": "string"},
                "user_ids": {"type": "array", "items": {"type": "string"}},
                "versions": {"type": "array", "items": {"type": "integer"}},
                "outcome": {"type": "string", "enum": ["granted", "refused", "reported"]},
                "request_id": {"type": "string"},
                "purpose": {"type": ["string", "null"]},
                "reason": {"type": ["string", "null"]},
                "counts": {
                    "description": "A replay's counts (action `replay`), or how many refusals of one kind a "
                    "counted refusal record stands for (`refused`).",
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["opened", "failed", "unreadable"],
                            "properties": {"opened": count, "failed": count, "unreadable": count},
                        },
                        {
                            "type": "object",
                            "required": ["refused"],
                            "properties": {"refused": count},
                            "additionalProperties": False,
                        },
                    ],
                },
                "source": {"type": "string", "description": "The refused request's TCP peer address."},
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the key service."""
    version_answer = {
        "type": "object",
        "required": ["user_id", "version"],
        "properties": {"user_id": _USER_ID, "version": {"type": "integer", "minimum": 1}},
        "additionalProperties": False,
    }
    missing = {
        "type": "object",
        "required": ["user_id", "version", "reason"],
        "properties": {
            "user_id": _USER_ID,
            "version": {"type": "integer"},
            "reason": {"type": "string", "enum": ["shredded", "unknown"]},
            "destroyed_at": {"type": ["string", "null"]},
        },
        "additionalProperties": False,
    }
    refused = {
        "type": "object",
        "required": ["user_id", "reason"],
        "properties": {"user_id": _USER_ID, "reason": {"type": "string", "enum": ["shredded"]}},
        "additionalProperties": False,
    }
    receipt = {
        "type": "object",
        "required": ["user_id", "versions_destroyed", "destroyed_at", "signature"],
        "properties": {
            "user_id": _USER_ID,
            "versions_destroyed": {"type": "array", "items": {"type": "integer"}},
            "destroyed_at": {"type": "string"},
            "signature": {"type": "string"},
        },
        "additionalProperties": False,
    }
    audit = {"$ref": "#/components/schemas/AuditRecord"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "PulseSeal key service",
            "version": "1",
            "description": "Per-user data keys for authenticated callers (contract §6; docs/keyservice.md).",
        },
        "paths": {
            "/v1/keys/encrypt": {
                "post": _operation(
                    "Current key per user, created on first use",
                    "keys:encrypt",
                    _json(
                        "Keys, and the users refused because they are shredded.",
                        {
                            "type": "object",
                            "required": ["keys", "refused"],
                            "properties": {
                                "keys": {"type": "array", "items": _key()},
                                "refused": {"type": "array", "items": refused},
                            },
                            "additionalProperties": False,
                        },
                    ),
                    body="EncryptRequest",
                )
            },
            "/v1/keys/decrypt": {
                "post": _operation(
                    "Given key versions; never creates one",
                    "keys:decrypt",
                    _json(
                        "Keys found, and the ones missing with why.",
                        {
                            "type": "object",
                            "required": ["keys", "missing"],
                            "properties": {
                                "keys": {"type": "array", "items": _key()},
                                "missing": {"type": "array", "items": missing},
                            },
                            "additionalProperties": False,
                        },
                    ),
                    body="DecryptRequest",
                )
            },
            "/v1/audit/replays": {
                "post": _operation(
                    "Record a finished replay in the audit log",
                    "keys:decrypt",
                    _json("The audit record written.", audit),
                    body="ReplayReport",
                )
            },
            "/v1/users/{user_id}/rotate": {
                "post": _operation(
                    "Add a key version and make it current",
                    "keys:admin",
                    _json("The new current version.", version_answer),
                    parameters=[_PATH_USER],
                    extra={"409": _problem("The user is shredded.")},
                )
            },
            "/v1/users/{user_id}": {
                "delete": _operation(
                    "Crypto-shred the user: destroy every key version",
                    "keys:admin",
                    _json("The signed erasure receipt.", receipt),
                    parameters=[_PATH_USER],
                )
            },
            "/v1/users/{user_id}/reinstate": {
                "post": _operation(
                    "Let a shredded user have keys again",
                    "keys:admin",
                    _json("The new current version.", version_answer),
                    parameters=[_PATH_USER],
                    extra={"409": _problem("The user is not shredded.")},
                )
            },
            "/v1/audit": {
                "get": _operation(
                    "Audit records, oldest first",
                    "keys:admin",
                    _json(
                        "The records.",
                        {
                            "type": "object",
                            "required": ["records"],
                            "properties": {"records": {"type": "array", "items": audit}},
                            "additionalProperties": False,
                        },
                    ),
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
            "/healthz": {
                "get": {
                    "summary": "Readiness: the key store answers and is durable",
                    "security": [],
                    "responses": {
                        "200": _json("Ready.", {"type": "object"}),
                        "503": _json("Not ready.", {"type": "object"}),
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
