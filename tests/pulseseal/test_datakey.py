"""The data key handle: key bytes stay inside, it cannot leave the process, it expires on time."""

from __future__ import annotations

import base64
import copy
import pickle  # nosec B403  # the test proves keys refuse pickling; nothing is unpickled
import traceback

import pytest

from pulseseal.envelope import MAX_KEY_VERSION, DataKey, InvalidKeyMaterial

# Distinctive bytes, so any leak of them (raw, hex or base64) is easy to spot.
MATERIAL = bytes.fromhex("deadbeef" * 8)
ENCODED = base64.b64encode(MATERIAL).decode()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _leaks(text: str) -> bool:
    return any(form in text for form in (MATERIAL.hex(), ENCODED, repr(MATERIAL), "deadbeef", "3q2+7"))


def test_the_repr_names_user_and_version_but_never_the_key() -> None:
    key = DataKey("alice", 3, MATERIAL)
    assert repr(key) == "DataKey(user_id='alice', version=3)"
    assert str(key) == repr(key)
    assert not _leaks(repr(key))
    assert not _leaks(f"{key!r} {key!s} {key}")


def test_no_public_attribute_holds_the_key() -> None:
    key = DataKey("alice", 3, MATERIAL)
    assert not hasattr(key, "__dict__")
    for name in dir(key):
        if not name.startswith("_"):
            value = getattr(key, name)
            assert not isinstance(value, bytes | bytearray | memoryview)
            assert not _leaks(repr(value))


def test_user_and_version_are_read_only() -> None:
    key = DataKey("alice", 3, MATERIAL)
    with pytest.raises(AttributeError):
        key.user_id = "mallory"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        key.version = 4  # type: ignore[misc]
    assert (key.user_id, key.version) == ("alice", 3)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_key_cannot_be_pickled(protocol: int) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(DataKey("alice", 1, MATERIAL), protocol=protocol)


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy])
def test_a_key_cannot_be_copied(duplicate: object) -> None:
    key = DataKey("alice", 1, MATERIAL)
    with pytest.raises(TypeError, match="cannot be copied"):
        duplicate(key)  # type: ignore[operator]


def test_a_key_inside_a_structure_cannot_be_deep_copied_either() -> None:
    with pytest.raises(TypeError):
        copy.deepcopy({"keys": [DataKey("alice", 1, MATERIAL)]})


# --- expiry ---------------------------------------------------------------------------------------------


def test_a_key_expires_exactly_when_its_ttl_ends() -> None:
    clock = FakeClock(1000.0)
    key = DataKey.from_base64("alice", 1, ENCODED, ttl_s=30, clock=clock)
    assert not key.expired()
    clock.now = 1029.999
    assert not key.expired()
    clock.now = 1030.0
    assert key.expired()
    clock.now = 5000.0
    assert key.expired()


def test_a_key_without_ttl_never_expires() -> None:
    clock = FakeClock(0.0)
    key = DataKey.from_base64("alice", 1, ENCODED, clock=clock)
    clock.now = 1e12
    assert not key.expired()


def test_an_explicit_deadline_uses_the_given_clock() -> None:
    clock = FakeClock(10.0)
    key = DataKey("alice", 1, MATERIAL, expires_at=20.0, clock=clock)
    assert not key.expired()
    clock.now = 20.0
    assert key.expired()


@pytest.mark.parametrize("ttl_s", [0.0, -5.0, float("nan")])
def test_a_zero_negative_or_nan_ttl_is_expired_at_once(ttl_s: float) -> None:
    # NaN compares false with everything; the handle must fail closed, not live forever.
    key = DataKey.from_base64("alice", 1, ENCODED, ttl_s=ttl_s, clock=FakeClock())
    assert key.expired()


# --- construction errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 16, 24, 31, 33, 64])
def test_key_material_must_be_32_bytes(size: int) -> None:
    with pytest.raises(InvalidKeyMaterial, match="must be 32 bytes"):
        DataKey("alice", 1, b"\xab" * size)


@pytest.mark.parametrize(
    "encoded",
    [
        "3q2-796tvu_erb7v3q2-796tvu_erb7v3q2-796tvu8=",  # URL-safe alphabet
        "3q2+796tvu/erb7v3q2+796tvu/erb7v3q2+796tvu8",  # padding missing
        "3q2+796tvu/erb7v\n3q2+796tvu/erb7v3q2+796tvu8=",  # line break
        " 3q2+796tvu/erb7v3q2+796tvu/erb7v3q2+796tvu8=",
        "3q2+796tvu/erb7v3q2+796tvu/erb7v3q2+796tvu8=?",
        "3q2+796tvu/erb7v3q2+796tvu/erb7v3q2+796tvü8=",  # not ASCII
        "=",
    ],
)
def test_bad_base64_is_refused_without_repeating_it(encoded: str) -> None:
    with pytest.raises(InvalidKeyMaterial) as caught:
        DataKey.from_base64("alice", 1, encoded)
    assert str(caught.value) == "a data key must be standard base64"
    assert caught.value.__cause__ is None
    assert "3q2" not in "".join(traceback.format_exception(caught.value))


@pytest.mark.parametrize("size", [0, 16, 31, 33, 48])
def test_base64_of_the_wrong_length_is_refused_without_repeating_it(size: int) -> None:
    encoded = base64.b64encode(MATERIAL[:size] if size <= 32 else MATERIAL + MATERIAL[: size - 32]).decode()
    with pytest.raises(InvalidKeyMaterial) as caught:
        DataKey.from_base64("alice", 1, encoded)
    assert str(caught.value) == "a data key must be 32 bytes"
    if encoded:
        assert encoded not in "".join(traceback.format_exception(caught.value))


def test_standard_base64_of_32_bytes_makes_a_key() -> None:
    key = DataKey.from_base64("bob@example.org", 2, ENCODED)
    assert (key.user_id, key.version, key.expired()) == ("bob@example.org", 2, False)


@pytest.mark.parametrize("version", [1, 2, MAX_KEY_VERSION])
def test_versions_fill_the_u32_slot(version: int) -> None:
    assert DataKey("alice", version, MATERIAL).version == version


@pytest.mark.parametrize("version", [0, -1, MAX_KEY_VERSION + 1, True, 1.0, "1"])
def test_a_version_outside_the_u32_slot_is_refused(version: object) -> None:
    with pytest.raises(ValueError, match="key version"):
        DataKey("alice", version, MATERIAL)  # type: ignore[arg-type]
