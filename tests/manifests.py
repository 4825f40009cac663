"""Writing sealed documents the way the encryptor does, manifest included, for tests that seal by hand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from consumers.manifests import ManifestWriter
from consumers.store import InsertOutcome, insert_sealed
from pulseseal import mongo
from pulseseal.settings import Settings
from shell.credentials import ENCRYPTOR_SIGNING_KEY_FILE, MANIFEST_SIGNER, load_private_key


def manifests_of(sealed: AsyncCollection[dict[str, Any]]) -> AsyncCollection[dict[str, Any]]:
    """`seal_manifests` beside a `sealed_events` collection."""
    return sealed.database.get_collection("seal_manifests", write_concern=mongo.WRITE_CONCERNS["journaled"])


def dev_writer(sealed: AsyncCollection[dict[str, Any]], settings: Settings | None = None) -> ManifestWriter:
    """A manifest writer with the dev signing key of `PULSESEAL_HOME` (a chain of its own)."""
    settings = settings or Settings()
    key = load_private_key(settings.credentials_dir / ENCRYPTOR_SIGNING_KEY_FILE)
    return ManifestWriter(manifests_of(sealed), sealed, key, MANIFEST_SIGNER)


async def store_listed(
    sealed: AsyncCollection[dict[str, Any]],
    docs: Sequence[dict[str, Any]],
    writer: ManifestWriter | None = None,
) -> InsertOutcome:
    """Insert sealed documents and list them in a signed manifest, as one encryptor flush does."""
    writer = writer or dev_writer(sealed)
    outcome = await insert_sealed(sealed, list(docs))
    await writer.record(docs, outcome)
    return outcome
