"""Usage-budgeted rotation: seals counted per key version; a version that reaches the budget is rotated.

Encryptors report how many documents they sealed under each key version (`POST /v1/keys/usage`, scope
`keys:encrypt`, aggregated every few seconds). The counts live in the key-store Redis beside the keys
(`HINCRBY` on one hash per user, so concurrent reports from many encryptors add up exactly). When a
report takes a version that is still the user's current one to the budget (default 2^24, far below the
2^32 random-nonce limit of AES-GCM), the service adds a new version, once (a per-version `HSETNX` claim,
so two reports crossing together rotate once), and audits it as an automatic rotation: caller
`keyservice`, action `rotate`, reason `seal_budget`. Encryptors keep a current key at most its TTL, so a
few more seals may land on the old version; the budget leaves room for that by orders of magnitude.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from redis.exceptions import RedisError

from keyservice.auth import VerifiedCaller
from keyservice.service import KeyService
from keyservice.wire.audit import AuditRecord, Outcome
from keyservice.wire.errors import KeyServiceError, KeyServiceUnavailable
from keyservice.wire.usage import DEFAULT_SEAL_BUDGET, RotatedKey, UsageAnswer, UsageReport
from schemas.rfc3339 import format_rfc3339

log = logging.getLogger(__name__)

AUTOMATIC_CALLER = "keyservice"
BUDGET_REASON = "seal_budget"


class SealBudget:
    """Counts seals per key version and rotates a user's key when its current version reaches `budget`.

    Args:
        service: The key service (its Redis, key store, audit log and metrics).
        budget: Seals per version that trigger a rotation.
        now: Clock of the audit records (injectable for tests).
    """

    def __init__(
        self,
        service: KeyService,
        budget: int = DEFAULT_SEAL_BUDGET,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if budget < 1:
            raise ValueError("the seal budget must be at least 1")
        self._service = service
        self.budget = budget
        self._now = now
        self._prefix = service.store.prefix

    def _usage_key(self, user_id: str) -> str:
        return f"{self._prefix}usage:{user_id}"

    async def record(self, caller: VerifiedCaller, report: UsageReport, request_id: str) -> UsageAnswer:
        """Add the report's counts; rotate every current version that reached the budget.

        Raises:
            KeyServiceUnavailable: the key store or the audit log is unavailable.
        """
        redis = self._service.redis
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for entry in report.usage:
                    pipe.hincrby(self._usage_key(entry.user_id), str(entry.version), entry.seals)
                totals = await pipe.execute()
        except RedisError:
            raise KeyServiceUnavailable("key store unavailable") from None
        rotated: list[RotatedKey] = []
        for entry, total in zip(report.usage, totals, strict=True):
            if int(total) >= self.budget:
                version = await self._rotate_once(entry.user_id, entry.version, request_id)
                if version is not None:
                    rotated.append(RotatedKey(user_id=entry.user_id, version=version))
        log.debug("usage reported by %s: %d key versions", caller.caller_id, len(report.usage))
        return UsageAnswer(rotated=rotated)

    async def _rotate_once(self, user_id: str, version: int, request_id: str) -> int | None:
        cur, _, shredded = await self._service.store.state(user_id)
        if shredded or cur != version:
            return None  # already rotated (by hand or by an earlier report), or nothing to rotate
        claim = f"rotated:{version}"
        try:
            if not await self._service.redis.hsetnx(self._usage_key(user_id), claim, b"1"):
                return None
        except RedisError:
            raise KeyServiceUnavailable("key store unavailable") from None
        try:
            new_version = await self._service.store.rotate(user_id)
        except KeyServiceError:
            # Let a later report try again; the count stays at or above the budget.
            try:
                await self._service.redis.hdel(self._usage_key(user_id), claim)
            except RedisError:
                log.error("could not release the rotation claim of a user after a failed rotation")
            raise
        await self._service.audit.append_many(
            [
                AuditRecord(
                    time=format_rfc3339(self._now()),
                    caller=AUTOMATIC_CALLER,
                    action="rotate",
                    user_ids=[user_id],
                    versions=[new_version],
                    outcome=Outcome.GRANTED,
                    request_id=request_id,
                    reason=BUDGET_REASON,
                )
            ]
        )
        self._service.metrics.grants.labels("rotate").inc()
        log.info("rotated a key automatically: version %d reached the seal budget", version)
        return new_version
