"""A batch manifest holds ids, times and hashes of sealed documents, never an event's values or a key: read
back as stored by the real MongoDB-compatible server, as raw BSON."""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.manifests import ManifestWriter
from consumers.store import insert_sealed
from pulseseal import mongo
from pulseseal.envelope import DataKey, seal_many
from schemas import validate_event
from tests.factories import valid_event

pytestmark = pytest.mark.integration

SECRET_NOTE = "aura-before-the-board-meeting-7f3a"  # nosec B105  # a canary value the test hunts for, not a secret


async def test_a_stored_manifest_holds_no_value_and_no_key(mongo_url: str, mongo_db: str) -> None:
    client = mongo.connect(mongo_url)
    name = f"{mongo_db}_p{uuid.uuid4().hex[:8]}"
    try:
        sealed, manifests = mongo.sealed_events(client, name), mongo.seal_manifests(client, name)
        material = os.urandom(32)
        event = valid_event(
            "migraine_attack",
            event_id=str(uuid.uuid4()),
            user_id="privacy-user",
            data={"severity": 9, "notes": SECRET_NOTE, "triggers": ["red-wine-secret"]},
        )
        docs = seal_many([validate_event(event)], {"privacy-user": DataKey("privacy-user", 1, material)})
        signing = Ed25519PrivateKey.generate()
        await ManifestWriter(manifests, sealed, signing, "encryptor").record(
            docs, await insert_sealed(sealed, docs)
        )
        raw: Any = await manifests.with_options(
            codec_options=bson.CodecOptions(document_class=RawBSONDocument)
        ).find_one({})
        stored = bytes(raw.raw)
        for secret in (SECRET_NOTE.encode(), b"red-wine-secret", material, base64.b64encode(material)):
            assert secret not in stored
        assert b"privacy-user" in stored  # the clear fields of the sealed document, nothing more
    finally:
        await client.drop_database(name)
        await client.close()
