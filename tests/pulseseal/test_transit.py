"""The transport envelope (contract §4): round trips, tampering, frozen envelopes, and interop with HPKE as
the contract spells it out. The HPKE calls below (outside pulseseal/transit.py) check the recipe against
the primitive used exactly as an outside implementation would."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import pickle  # nosec B403  # the test proves keys refuse pickling; nothing is unpickled
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from hypothesis import given, settings
from hypothesis import strategies as st

from pulseseal.topology import JSON, NDJSON
from pulseseal.transit import (
    ENC_BYTES,
    OVERHEAD_BYTES,
    TRANSPORT_HEADER,
    TRANSPORT_KEY_HEADER,
    TRANSPORT_VERSION,
    InvalidTransportKey,
    SealedMessage,
    TransportPrivateKey,
    TransportPublicKey,
    TransportUnopenable,
    TransportUnsealed,
    info_for,
    open_message,
    seal,
    sealed_from,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "transport_v1.json").read_text())
KEY = TransportPrivateKey.generate()
OTHER = TransportPrivateKey.generate()
KEYS = {KEY.key_id: KEY}
CONTRACT_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _b64(name: str) -> bytes:
    return base64.b64decode(VECTORS[name])


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


@settings(max_examples=50, deadline=None)
@given(plaintext=st.binary(max_size=4096), content_type=st.sampled_from([JSON, NDJSON]))
def test_round_trip(plaintext: bytes, content_type: str) -> None:
    sealed = seal(plaintext, KEY.public_key, content_type)
    assert sealed.key_id == KEY.key_id
    assert sealed.content_type == content_type
    assert len(sealed.body) == len(plaintext) + OVERHEAD_BYTES
    assert open_message(sealed, KEYS) == plaintext


def test_body_holds_no_plaintext_and_two_seals_differ() -> None:
    plaintext = b'{"data":{"bpm":61},"user_id":"canary-transit-7f3a"}'
    first, second = seal(plaintext, KEY.public_key, JSON), seal(plaintext, KEY.public_key, JSON)
    assert b"canary-transit-7f3a" not in first.body
    assert b"bpm" not in first.body
    assert first.body != second.body


def test_headers_name_version_and_key() -> None:
    sealed = seal(b"{}", KEY.public_key, JSON)
    assert sealed.headers == {TRANSPORT_HEADER: TRANSPORT_VERSION, TRANSPORT_KEY_HEADER: KEY.key_id}
    assert sealed_from(sealed.body, sealed.headers, JSON) == sealed


def test_every_flipped_bit_of_enc_tag_and_some_ciphertext_fails_to_open() -> None:
    sealed = seal(b'{"event_id":"x"}', KEY.public_key, JSON)
    # Every bit of the tail (ciphertext and tag), and a spread of the encapsulation's bits.
    bits = [*range(0, ENC_BYTES * 8, 97), *range(ENC_BYTES * 8, len(sealed.body) * 8)]
    for bit in bits:
        with pytest.raises(TransportUnopenable):
            open_message(dataclasses.replace(sealed, body=_flip(sealed.body, bit)), KEYS)


@pytest.mark.parametrize("cut", [0, 1, ENC_BYTES, OVERHEAD_BYTES - 1])
def test_truncated_body_fails_to_open(cut: int) -> None:
    sealed = seal(b"", KEY.public_key, JSON)
    with pytest.raises(TransportUnopenable):
        open_message(dataclasses.replace(sealed, body=sealed.body[:cut]), KEYS)


def test_other_content_type_fails_to_open() -> None:
    sealed = seal(b'{"a":1}\n', KEY.public_key, NDJSON)
    for content_type in (JSON, "application/x-ndjson; charset=utf-8", ""):
        with pytest.raises(TransportUnopenable):
            open_message(dataclasses.replace(sealed, content_type=content_type), KEYS)


def test_wrong_or_unknown_key_id_fails_to_open_with_the_same_error() -> None:
    sealed = seal(b"{}", KEY.public_key, JSON)
    errors = []
    for keys, key_id in (
        ({OTHER.key_id: OTHER}, KEY.key_id),  # unknown id (retired)
        ({KEY.key_id: KEY, OTHER.key_id: OTHER}, OTHER.key_id),  # relabelled to another key's id
        ({OTHER.key_id: OTHER}, OTHER.key_id),  # relabelled, and that key is all there is
    ):
        with pytest.raises(TransportUnopenable) as caught:
            open_message(dataclasses.replace(sealed, key_id=key_id), keys)
        errors.append(str(caught.value))
    assert len(set(errors)) == 1
    assert KEY.key_id not in errors[0]


def test_other_info_fails_to_open_with_raw_hpke() -> None:
    sealed = seal(b"{}", KEY.public_key, JSON)
    seed, xpriv = KEY.export_private_parts()
    private = hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(seed), x25519.X25519PrivateKey.from_private_bytes(xpriv)
    )
    assert CONTRACT_SUITE.decrypt(sealed.body, private, info_for(KEY.key_id, JSON)) == b"{}"
    with pytest.raises(Exception):  # noqa: B017,PT011 - the primitive's own error; any refusal will do
        CONTRACT_SUITE.decrypt(sealed.body, private, b"pulseseal-transport-v1\x00" + KEY.key_id.encode())


def test_sealed_from_tells_unsealed_from_malformed() -> None:
    with pytest.raises(TransportUnsealed):
        sealed_from(b"{}", None, JSON)
    with pytest.raises(TransportUnsealed):
        sealed_from(b"{}", {"x-pulseseal-error": "invalid_event"}, JSON)
    for headers in (
        {TRANSPORT_HEADER: "hpke-v0", TRANSPORT_KEY_HEADER: KEY.key_id},
        {TRANSPORT_HEADER: TRANSPORT_VERSION},
        {TRANSPORT_KEY_HEADER: KEY.key_id},
        {TRANSPORT_HEADER: TRANSPORT_VERSION, TRANSPORT_KEY_HEADER: "no spaces allowed"},
    ):
        with pytest.raises(TransportUnopenable):
            sealed_from(b"{}", headers, JSON)
    as_bytes = {TRANSPORT_HEADER: TRANSPORT_VERSION.encode(), TRANSPORT_KEY_HEADER: KEY.key_id.encode()}
    assert sealed_from(b"x", as_bytes, None).key_id == KEY.key_id


def test_interop_contract_public_key_from_raw_bytes() -> None:
    """An outside producer builds the public key exactly as contract §4 says and seals with HPKE; our
    recipe opens it. And what the recipe seals, raw HPKE opens with the contract's private parts."""
    mlkem768, x25519_public = KEY.public_key.public_parts()
    assert len(mlkem768) == 1184
    assert len(x25519_public) == 32
    public = hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(mlkem768),
        x25519.X25519PublicKey.from_public_bytes(x25519_public),
    )
    info = b"pulseseal-transport-v1\x00" + KEY.key_id.encode("ascii") + b"\x00" + NDJSON.encode("ascii")
    body = CONTRACT_SUITE.encrypt(b'{"a":1}\n', public, info)
    assert open_message(SealedMessage(body, KEY.key_id, NDJSON), KEYS) == b'{"a":1}\n'


def test_frozen_envelopes_still_open() -> None:
    key = TransportPrivateKey(VECTORS["key_id"], _b64("mlkem768_seed_b64"), _b64("x25519_private_b64"))
    assert key.public_key.public_parts() == (_b64("mlkem768_public_b64"), _b64("x25519_public_b64"))
    for message in VECTORS["messages"]:
        body = base64.b64decode(message["body_b64"])
        sealed = SealedMessage(body, VECTORS["key_id"], message["content_type"])
        assert open_message(sealed, {key.key_id: key}) == base64.b64decode(message["plaintext_b64"])


def test_generated_key_id_is_the_fingerprint_and_stable() -> None:
    seed, xpriv = KEY.export_private_parts()
    again = TransportPrivateKey(KEY.key_id, seed, xpriv)
    assert again.public_key.public_parts() == KEY.public_key.public_parts()
    assert KEY.key_id != OTHER.key_id
    assert len(KEY.key_id) == 24


@pytest.mark.parametrize(
    ("key_id", "seed", "xpriv"),
    [
        ("ok", b"\x00" * 63, b"\x00" * 32),
        ("ok", b"\x00" * 64, b"\x00" * 31),
        ("", b"\x00" * 64, b"\x00" * 32),
        ("a/b", b"\x00" * 64, b"\x00" * 32),
        ("x" * 65, b"\x00" * 64, b"\x00" * 32),
    ],
)
def test_bad_private_parts_are_refused(key_id: str, seed: bytes, xpriv: bytes) -> None:
    with pytest.raises(InvalidTransportKey):
        TransportPrivateKey(key_id, seed, xpriv)


def test_bad_public_parts_are_refused() -> None:
    mlkem768, x25519_public = KEY.public_key.public_parts()
    for args in (
        (mlkem768[:-1], x25519_public),
        (mlkem768, x25519_public + b"\x00"),
        (b"\xff" * 1184, x25519_public),
    ):
        with pytest.raises(InvalidTransportKey):
            TransportPublicKey.from_raw("k1", *args)


@pytest.mark.parametrize("handle", [KEY, KEY.public_key])
def test_handles_hide_bytes_and_refuse_pickling_and_copying(handle: Any) -> None:
    seed, xpriv = KEY.export_private_parts()
    text = repr(handle)
    assert KEY.key_id in text
    for secret in (seed, xpriv):
        assert secret.hex() not in text
        assert base64.b64encode(secret).decode() not in text
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError):
            attempt(handle)


def test_sealed_message_repr_shows_no_body() -> None:
    sealed = seal(b"canary-repr-body", KEY.public_key, JSON)
    assert sealed.body.hex() not in repr(sealed)
    assert "canary" not in repr(sealed)
