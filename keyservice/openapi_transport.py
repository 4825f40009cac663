"""The transport-key routes in the key service's OpenAPI document (contract §4 and §6), kept beside the
rest of keyservice/openapi.py's description and merged into it."""

from __future__ import annotations

from typing import Any

from pulseseal.transit import KEY_ID_PATTERN, SUITE_NAME

_KEY_ID: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": KEY_ID_PATTERN}
_BASE64: dict[str, Any] = {"type": "string", "contentEncoding": "base64"}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }


def transport_paths(operation: Any, json_answer: Any, problem: Any, common: dict[str, Any]) -> dict[str, Any]:
    """The four transport-key paths, built with openapi.py's own helpers (passed in, so that this module
    imports nothing of the server's)."""
    public = _object(
        {
            "key_id": _KEY_ID,
            "suite": {"type": "string", "const": SUITE_NAME},
            "mlkem768": _BASE64,
            "x25519": _BASE64,
        }
    )
    private = _object({"key_id": _KEY_ID, "mlkem768_seed": _BASE64, "x25519": _BASE64})
    return {
        "/v1/transport/key": {
            "get": {
                "summary": "The current transport public key, created on first use",
                "description": (
                    "No token: what every producer seals broker messages to (HPKE, base mode, "
                    f"{SUITE_NAME}). `mlkem768` is the 1184-byte ML-KEM-768 public key, `x25519` the 32-byte "
                    "X25519 one."
                ),
                "security": [],
                "responses": {
                    "200": json_answer("The current public key.", public),
                    "500": common["500"],
                    "503": common["503"],
                },
            }
        },
        "/v1/transport/keys/open": {
            "post": operation(
                "Private parts of every transport key not yet retired, current first",
                "transport:open",
                json_answer(
                    "`mlkem768_seed` is the 64-byte seed of `MLKEM768PrivateKey.from_seed_bytes`, `x25519` the "
                    "32-byte raw private key.",
                    _object({"keys": {"type": "array", "items": private}}),
                ),
                body="OpenTransportKeys",
            )
        },
        "/v1/transport/rotate": {
            "post": operation(
                "A new current transport key; older ones still open until retired",
                "keys:admin",
                json_answer("The new current key.", _object({"key_id": _KEY_ID})),
            )
        },
        "/v1/transport/keys/{key_id}": {
            "delete": operation(
                "Retire (destroy) a transport key that is not current",
                "keys:admin",
                json_answer(
                    "The retired key.", _object({"key_id": _KEY_ID, "retired_at": {"type": "string"}})
                ),
                parameters=[{"name": "key_id", "in": "path", "required": True, "schema": _KEY_ID}],
                extra={
                    "404": problem("No transport key has this id (unknown_transport_key)."),
                    "409": problem("It is the current key (transport_key_current): rotate first."),
                },
            )
        },
    }


def open_request_schema() -> dict[str, Any]:
    """The body of `POST /v1/transport/keys/open`: an empty object."""
    return {"type": "object", "properties": {}, "additionalProperties": False}
