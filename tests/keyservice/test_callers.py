"""The callers file: valid entries load; anything else refuses startup with a line naming the entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.callers import CallerRegistry
from keyservice.wire.errors import StartupRefused
from tests.keyservice.helpers import make_credentials, public_pem

KEY = public_pem(Ed25519PrivateKey.generate())


def entry(**changes: Any) -> dict[str, Any]:
    return {
        "callers": {
            "encryptor": {
                "public_key": KEY,
                "scopes": ["keys:encrypt"],
                "networks": ["127.0.0.0/8"],
                **changes,
            }
        }
    }


def test_loads_the_dev_callers_file(tmp_path: Path) -> None:
    creds = make_credentials(tmp_path)
    registry = CallerRegistry.from_file(creds.callers_file)
    assert len(registry) == 4
    encryptor = registry.get("encryptor")
    assert encryptor is not None
    assert encryptor.scopes == {"keys:encrypt", "transport:open"}
    gateway = registry.get("gateway")
    assert gateway is not None
    assert gateway.scopes == frozenset()
    assert registry.get("mallory") is None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::2", False),
        ("", False),
        ("not-an-ip", False),
    ],
)
def test_networks(address: str, allowed: bool) -> None:
    doc = entry(networks=["127.0.0.0/8", "::1/128"])
    policy = CallerRegistry.from_document(doc).get("encryptor")
    assert policy is not None
    assert policy.allows_address(address) is allowed


def _ec_pem() -> str:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "`callers` object"),
        ({"callers": []}, "`callers` object"),
        (entry(public_key=_ec_pem()), "must be Ed25519"),
        (entry(public_key="junk"), "not a PEM public key"),
        (entry(public_key=None), "PEM text"),
        (entry(scopes=["keys:everything"]), "unknown scope"),
        (entry(scopes="keys:encrypt"), "list of strings"),
        (entry(networks=[]), "non-empty list"),
        (entry(networks=["10.0.0.1/8"]), "invalid CIDR"),
        (entry(networks=["nowhere"]), "invalid CIDR"),
        ({"callers": {"x": "y"}}, "expected an object"),
    ],
)
def test_invalid_entries_refuse_startup(document: object, message: str) -> None:
    with pytest.raises(StartupRefused, match=message):
        CallerRegistry.from_document(document)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(StartupRefused, match="does not exist"):
        CallerRegistry.from_file(tmp_path / "callers.json")
    (tmp_path / "callers.json").write_text("{not json")
    with pytest.raises(StartupRefused, match="cannot read callers file"):
        CallerRegistry.from_file(tmp_path / "callers.json")
    (tmp_path / "callers.json").write_text(json.dumps(entry()))
    assert len(CallerRegistry.from_file(tmp_path / "callers.json")) == 1
