"""Usage-budgeted rotation (keyservice/usage.py) over the real key-store Redis: encryptors report seals
per key version; a current version that reaches the budget is rotated once, audited as automatic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from keyservice.app import create_app
from keyservice.client import KeyServiceClient
from keyservice.client.usage import report_usage
from keyservice.service import KeyService
from keyservice.wire.errors import CallerNotAllowed, RequestInvalid
from keyservice.wire.usage import RotatedKey
from tests.keyservice.helpers import Credentials

pytestmark = pytest.mark.integration

BUDGET = 100


@pytest.fixture
async def budget_client(
    service: KeyService, creds: Credentials
) -> AsyncIterator[Callable[[str], KeyServiceClient]]:
    """Clients of a key service whose seal budget is 100."""
    app = create_app(service, seal_budget=BUDGET)
    made: list[KeyServiceClient] = []

    def build(role: str) -> KeyServiceClient:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40002))
        client = KeyServiceClient("http://127.0.0.1", role, creds.keys[role], transport=transport)
        made.append(client)
        return client

    yield build
    for client in made:
        await client.aclose()


async def test_a_version_that_reaches_the_budget_is_rotated_once_and_audited_as_automatic(
    budget_client: Callable[[str], KeyServiceClient],
) -> None:
    encryptor, admin = budget_client("encryptor"), budget_client("admin")
    first = await encryptor.current_key("alice")
    await encryptor.current_key("bob")
    assert first.version == 1

    assert await report_usage(encryptor, {("alice", 1): 60, ("bob", 1): 99}) == []
    rotated = await report_usage(encryptor, {("alice", 1): 40, ("bob", 1): 0})
    assert rotated == [RotatedKey(user_id="alice", version=2)]
    # The encryptor's cached current key was dropped: the next seal uses the new version.
    assert (await encryptor.current_key("alice")).version == 2
    # More seals on the old version (keys cached elsewhere until their TTL) rotate nothing more.
    assert await report_usage(encryptor, {("alice", 1): 500}) == []
    assert (await encryptor.current_key("bob")).version == 1

    records = [r for r in await admin.audit(user_id="alice") if r.action == "rotate"]
    assert [(r.caller, r.versions, r.outcome, r.reason) for r in records] == [
        ("keyservice", [2], "granted", "seal_budget")
    ]


async def test_concurrent_reports_crossing_the_budget_together_rotate_once(
    budget_client: Callable[[str], KeyServiceClient],
) -> None:
    encryptors = [budget_client("encryptor") for _ in range(4)]
    await encryptors[0].current_key("carol")
    results = await asyncio.gather(*(report_usage(e, {("carol", 1): 30}) for e in encryptors))
    assert sorted(key.version for found in results for key in found) == [2]
    assert (await budget_client("admin").rotate("carol")) == 3  # a manual rotation still follows on


async def test_usage_needs_the_encrypt_scope_and_a_well_formed_body(
    budget_client: Callable[[str], KeyServiceClient],
) -> None:
    with pytest.raises(CallerNotAllowed):
        await report_usage(budget_client("auditor"), {("dave", 1): 5})
    with pytest.raises(RequestInvalid):
        await report_usage(budget_client("encryptor"), {("not a user", 1): 5})
