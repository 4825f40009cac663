"""Shared fixtures of the envelope tests: fixed key material, a fixed time, factory events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pulseseal.envelope import DataKey, IntegrityError, open_sealed, seal
from schemas import HealthEvent, validate_event
from tests.factories import valid_event

ALICE_1 = bytes(range(32))
ALICE_2 = bytes(range(32, 64))
BOB_1 = bytes(range(64, 96))
SEALED_AT = datetime(2026, 11, 29, 8, 0, 0, 123_456, tzinfo=UTC)


def key(user_id: str = "user-0001", version: int = 1, material: bytes = ALICE_1) -> DataKey:
    """A handle without expiry."""
    return DataKey(user_id, version, material)


def event(type_: str = "migraine_attack", **overrides: Any) -> HealthEvent:
    """A validated factory event."""
    return validate_event(valid_event(type_, **overrides))


def sealed(
    type_: str = "migraine_attack", data_key: DataKey | None = None, **overrides: Any
) -> dict[str, Any]:
    """A sealed factory event."""
    return seal(event(type_, **overrides), data_key or key(), now=SEALED_AT)


def assert_fails_to_open(document: object, data_key: DataKey) -> None:
    """Opening must raise the one opaque IntegrityError and nothing else."""
    with pytest.raises(IntegrityError) as caught:
        open_sealed(document, data_key)  # type: ignore[arg-type]
    assert str(caught.value) == "sealed document failed to open"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None
