"""The master-key recipe: round trips, associated-data binding, tamper detection, handles that never show
their bytes, and the key id / check value."""

from __future__ import annotations

import base64
import copy
import os
import pickle  # nosec B403  # the test proves keys refuse pickling; nothing is unpickled

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyservice.wire.errors import KeyUnwrapError, StartupRefused
from keyservice.wrapping import WRAPPED_BYTES, MasterKey, new_data_key

MASTER = MasterKey(bytes(range(32)))


@given(
    material=st.binary(min_size=32, max_size=32),
    user=st.from_regex(r"[A-Za-z0-9._:@-]{1,128}", fullmatch=True),
    version=st.integers(1, 2**31 - 1),
)
def test_round_trip(material: bytes, user: str, version: int) -> None:
    wrapped = MASTER.wrap(user, version, material)
    assert len(wrapped) == WRAPPED_BYTES
    assert material not in wrapped
    assert MASTER.unwrap(user, version, wrapped) == material


# Frozen vectors: a later version of the recipe must still open keys wrapped by this one.
FROZEN_KEY_ID = "60fede958054a3cc"
FROZEN_CHECK = "4b210bd921ed6e24375a005863c88eb3d98408b852b10e95827aa9425f87600c"
FROZEN_WRAPPED = (
    "0160fede958054a3cc000000000000000000000000"
    "0ebcb5deb52c83bd08a8a935182c9199d24356532881602f809eb383c5ff5d56133932d1cf40ebb04fb4b0fd70116dd4"
)


def test_frozen_vector() -> None:
    assert (MASTER.key_id_hex, MASTER.check_value) == (FROZEN_KEY_ID, FROZEN_CHECK)
    assert MASTER.wrap("alice", 1, bytes(32), nonce=bytes(12)).hex() == FROZEN_WRAPPED
    assert MASTER.unwrap("alice", 1, bytes.fromhex(FROZEN_WRAPPED)) == bytes(32)


@pytest.mark.parametrize(("user", "version"), [("bob", 1), ("alice", 2)])
def test_wrapped_key_is_bound_to_user_and_version(user: str, version: int) -> None:
    wrapped = MASTER.wrap("alice", 1, os.urandom(32))
    with pytest.raises(KeyUnwrapError):
        MASTER.unwrap(user, version, wrapped)


def test_another_master_key_cannot_open() -> None:
    wrapped = MASTER.wrap("alice", 1, os.urandom(32))
    other = MasterKey(os.urandom(32))
    assert not other.owns(wrapped)
    with pytest.raises(KeyUnwrapError):
        other.unwrap("alice", 1, wrapped)


@pytest.mark.parametrize("position", [0, 1, 9, 20, 21, WRAPPED_BYTES - 1])
def test_every_bit_flip_fails(position: int) -> None:
    wrapped = bytearray(MASTER.wrap("alice", 1, os.urandom(32)))
    wrapped[position] ^= 0x01
    with pytest.raises(KeyUnwrapError):
        MASTER.unwrap("alice", 1, bytes(wrapped))


def test_truncated_fails() -> None:
    with pytest.raises(KeyUnwrapError):
        MASTER.unwrap("alice", 1, MASTER.wrap("alice", 1, os.urandom(32))[:-1])


def test_key_id_and_check_value_are_stable_and_distinct() -> None:
    same = MasterKey(bytes(range(32)))
    assert (same.key_id, same.check_value) == (MASTER.key_id, MASTER.check_value)
    assert len(MASTER.key_id) == 8
    assert len(MASTER.check_value) == 64
    assert MASTER.key_id.hex() not in MASTER.check_value
    assert MasterKey(os.urandom(32)).check_value != MASTER.check_value


def test_handle_never_shows_its_bytes() -> None:
    secret = os.urandom(32)
    key = MasterKey(secret)
    for text in (repr(key), str(key)):
        assert secret.hex() not in text
        assert base64.b64encode(secret).decode() not in text
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.copy(key)
    with pytest.raises(TypeError):
        copy.deepcopy(key)


@pytest.mark.parametrize(
    "text",
    ["", "not base64!", base64.b64encode(b"short").decode(), base64.b64encode(os.urandom(33)).decode()],
)
def test_bad_master_key_text_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(StartupRefused) as info:
        MasterKey.from_base64(text)
    assert not text or text not in str(info.value)


def test_master_key_file(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "master.key"  # type: ignore[operator]
    with pytest.raises(StartupRefused, match="no master key"):
        MasterKey.from_file(path)
    material = os.urandom(32)
    path.write_text(base64.b64encode(material).decode() + "\n")
    path.chmod(0o600)
    assert MasterKey.from_file(path).check_value == MasterKey(material).check_value


def test_new_data_key_uses_the_given_rng() -> None:
    assert new_data_key(lambda n: b"\x07" * n) == b"\x07" * 32
    assert len({new_data_key() for _ in range(100)}) == 100
