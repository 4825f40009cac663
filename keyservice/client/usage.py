"""Reporting seals per key version to the key service (`POST /v1/keys/usage`, scope `keys:encrypt`).

The key service rotates a user's key when a version reaches its seal budget (keyservice/usage.py). A
report is never repeated once it may have arrived: counted twice would rotate early, which is harmless,
but it is still not the count. The users rotated by a report have their cached current key dropped, so
the next seal asks for the new version.
"""

from __future__ import annotations

from collections.abc import Mapping

from keyservice.client.api import KeyServiceClient
from keyservice.wire.models import MAX_KEYS, parse_answer
from keyservice.wire.usage import USAGE_PATH, RotatedKey, UsageAnswer

UsageCounts = Mapping[tuple[str, int], int]


async def report_usage(client: KeyServiceClient, counts: UsageCounts) -> list[RotatedKey]:
    """Send `(user_id, version) → seals` (positive counts), at most `MAX_KEYS` entries a request.

    Returns:
        The keys the key service rotated because of these counts.

    Raises:
        KeyServiceError: a request was refused or the key service was not reachable. Earlier requests
            of a large report may have been recorded: a caller that resends everything over-counts,
            which only brings a rotation forward, never delays it.
    """
    entries = [
        {"user_id": user_id, "version": version, "seals": seals}
        for (user_id, version), seals in sorted(counts.items())
        if seals > 0
    ]
    rotated: list[RotatedKey] = []
    for start in range(0, len(entries), MAX_KEYS):
        payload = {"usage": entries[start : start + MAX_KEYS]}
        # `_request` is the client's one signed-request path; this endpoint lives in its own module so
        # that the usage report stays apart from the key requests in api.py.
        body = await client._request("POST", USAGE_PATH, "keys:encrypt", payload, idempotent=False)
        answer = parse_answer(UsageAnswer, body)
        for key in answer.rotated:
            client.current_key_cache.discard(key.user_id)
        rotated += answer.rotated
    return rotated
