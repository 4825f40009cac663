"""What the key service does, as plain async functions over verified input (the routes only parse).

Every grant and refusal goes to the audit log before the answer leaves; a grant whose audit record
cannot be written is not handed out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyservice.audit import AuditLog
from keyservice.auth import Authenticator, RequestFacts, VerifiedCaller
from keyservice.edge import Edge, RefusalLimiter, RefusalTally, TallyKey, tally_key
from keyservice.erasure import Erasure
from keyservice.ledger import LedgerEntry, ShredLedger
from keyservice.metrics import KeyServiceMetrics
from keyservice.receipts import sign_receipt
from keyservice.shredguard import ShredGuard
from keyservice.store import KeyStore, PlainKey, VersionLookup
from keyservice.wire.audit import AuditAnswer, AuditRecord, Outcome
from keyservice.wire.errors import KeyServiceError, KeyServiceUnavailable, UserNotShredded
from keyservice.wire.models import (
    DecryptAnswer,
    DecryptRequest,
    EncryptAnswer,
    EncryptRequest,
    GrantedKey,
    MissingKey,
    MissingReason,
    ReceiptAnswer,
    RefusedUser,
    ReplayReport,
    VersionAnswer,
)
from schemas.rfc3339 import format_rfc3339 as rfc3339

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class KeyService:
    """The key service's logic, wired to its store, callers, audit log, ledger and signing key."""

    def __init__(
        self,
        *,
        redis: Redis,
        store: KeyStore,
        authenticator: Authenticator,
        audit: AuditLog,
        ledger: ShredLedger,
        signing_key: Ed25519PrivateKey,
        metrics: KeyServiceMetrics,
        key_ttl_s: int,
        require_durable: bool,
        guard: ShredGuard | None = None,
        erasure: Erasure | None = None,
        edge: Edge | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.redis = redis
        self.store = store
        self.authenticator = authenticator
        self.audit = audit
        self.ledger = ledger
        self.signing_key = signing_key
        self.metrics = metrics
        self.key_ttl_s = key_ttl_s
        self.require_durable = require_durable
        self.guard = guard if guard is not None else ShredGuard(ledger)
        # What makes a shred hold beyond Redis's memory (disk, caches, backups): docs/contract.md §6.
        self.erasure = erasure if erasure is not None else Erasure.for_store(redis, store, now=now)
        self.edge = edge or Edge(authenticator.registry, body_timeout_s=10.0, limiter=RefusalLimiter())
        self.refusals = RefusalTally(self._write_refusal)
        self._now = now

    async def authenticate(self, facts: RequestFacts, scope: str) -> VerifiedCaller:
        """Verify a request's caller for `scope` (see `Authenticator.verify`)."""
        return await self.authenticator.verify(facts, scope)

    def _record(self, caller: str | None, action: str, users: Sequence[str], **extra: Any) -> AuditRecord:
        return AuditRecord(
            time=rfc3339(self._now()),
            caller=caller,
            action=action,
            user_ids=list(users),
            versions=extra.pop("versions", []),
            **extra,
        )

    async def encrypt(
        self, caller: VerifiedCaller, request: EncryptRequest, request_id: str
    ) -> EncryptAnswer:
        """Current key per user, created on first use; shredded users are refused.

        Raises:
            KeyServiceUnavailable: the store or audit log is unavailable.
            KeyUnwrapError: a stored key fails its integrity check.
        """
        user_ids = list(dict.fromkeys(request.user_ids))
        keys, shredded = await self._current_keys(user_ids)
        records = []
        if keys:
            records.append(
                self._record(
                    caller.caller_id,
                    "encrypt",
                    [k.user_id for k in keys],
                    versions=[k.version for k in keys],
                    outcome=Outcome.GRANTED,
                    request_id=request_id,
                )
            )
        if shredded:
            records.append(
                self._record(
                    caller.caller_id,
                    "encrypt",
                    shredded,
                    outcome=Outcome.REFUSED,
                    request_id=request_id,
                    reason=MissingReason.SHREDDED,
                )
            )
        await self.audit.append_many(records)
        self.metrics.grants.labels("encrypt").inc(len(keys))
        if shredded:
            self.metrics.refusals.labels(MissingReason.SHREDDED).inc(len(shredded))
            self.metrics.shredded_access.labels(caller.caller_id).inc()
        return EncryptAnswer.model_construct(
            keys=self._granted(keys),
            refused=[RefusedUser.model_construct(user_id=u, reason=MissingReason.SHREDDED) for u in shredded],
        )

    def _granted(self, keys: Sequence[PlainKey]) -> list[GrantedKey]:
        # model_construct: these values come from the store, not from a caller; validating a thousand of
        # them again would cost more than the rest of the answer.
        ttl = self.key_ttl_s
        return [
            GrantedKey.model_construct(user_id=k.user_id, version=k.version, key=k.b64(), expires_in=ttl)
            for k in keys
        ]

    async def decrypt(
        self, caller: VerifiedCaller, request: DecryptRequest, request_id: str
    ) -> DecryptAnswer:
        """Given versions of given users, and the missing ones with why; never creates a key.

        A `shredded` entry also says when the version was destroyed (`destroyed_at`, RFC 3339, or null when
        the store has no date for it), so a replay can report when a user's records became unreadable.

        Raises:
            KeyServiceUnavailable: the store or audit log is unavailable.
            KeyUnwrapError: a stored key fails its integrity check.
        """
        refs = list(dict.fromkeys((k.user_id, k.version) for k in request.keys))
        lookup = await self._keys_at(refs)
        records = []
        if lookup.found:
            records.append(
                self._record(
                    caller.caller_id,
                    "decrypt",
                    [k.user_id for k in lookup.found],
                    versions=[k.version for k in lookup.found],
                    outcome=Outcome.GRANTED,
                    request_id=request_id,
                    purpose=request.purpose,
                )
            )
        for reason in MissingReason:
            refused = [(u, v) for u, v, r in lookup.missing if r == reason]
            if refused:
                records.append(
                    self._record(
                        caller.caller_id,
                        "decrypt",
                        [u for u, _ in refused],
                        versions=[v for _, v in refused],
                        outcome=Outcome.REFUSED,
                        request_id=request_id,
                        purpose=request.purpose,
                        reason=reason,
                    )
                )
                self.metrics.refusals.labels(reason).inc(len(refused))
                if reason == MissingReason.SHREDDED:
                    self.metrics.shredded_access.labels(caller.caller_id).inc()
        await self.audit.append_many(records)
        self.metrics.grants.labels("decrypt").inc(len(lookup.found))
        return DecryptAnswer.model_construct(
            keys=self._granted(lookup.found),
            missing=[_missing(u, v, r, lookup.destroyed_at) for u, v, r in lookup.missing],
        )

    async def _current_keys(self, user_ids: list[str]) -> tuple[list[PlainKey], list[str]]:
        # The ledger is asked before and after the store: a user it says is shredded is refused without
        # touching the store, and a key the store offers that the ledger says was destroyed (a store
        # restored behind the service's back) makes the service re-apply the ledger and ask again.
        await self.guard.refresh()
        refused = [u for u in user_ids if self.guard.shredded(u)]
        asked = [u for u in user_ids if not self.guard.shredded(u)]
        keys, shredded = await self.store.current_keys(asked)
        stale = [k.user_id for k in keys if self.guard.forbids(k.user_id, k.version)]
        if stale:
            await self._reapply(stale)
            keys, shredded = await self.store.current_keys(asked)
            if any(self.guard.forbids(k.user_id, k.version) for k in keys):
                raise KeyServiceUnavailable("the key store does not agree with the shred ledger")
        order = {u: i for i, u in enumerate(user_ids)}
        return keys, sorted({*refused, *shredded}, key=order.__getitem__)

    async def _keys_at(self, refs: list[tuple[str, int]]) -> VersionLookup:
        await self.guard.refresh()
        lookup = await self.store.keys_at(refs)
        stale = {k.user_id for k in lookup.found if self.guard.forbids(k.user_id, k.version)}
        if stale:
            await self._reapply(sorted(stale))
            lookup = await self.store.keys_at(refs)
            if any(self.guard.forbids(k.user_id, k.version) for k in lookup.found):
                raise KeyServiceUnavailable("the key store does not agree with the shred ledger")
        return lookup

    async def _reapply(self, user_ids: Sequence[str]) -> None:
        destroyed, reshredded = await self.store.reapply(self.guard.floors_of(user_ids))
        log.warning(
            "the key store offered keys the shred ledger says were destroyed (restored from a backup or a "
            "stale replica?): re-applied the ledger to %d users, %d key versions destroyed again, %d users "
            "shredded again",
            len(user_ids),
            destroyed,
            reshredded,
        )

    async def record_replay(
        self, caller: VerifiedCaller, report: ReplayReport, request_id: str
    ) -> AuditRecord:
        """Write a finished replay to the audit log: whose records, why, and how many opened, failed to open
        or were unreadable. The keys it used were audited as they were granted; this closes the story.

        Raises:
            KeyServiceUnavailable: the audit log is unavailable.
        """
        record = self._record(
            caller.caller_id,
            "replay",
            [report.user_id],
            outcome=Outcome.REPORTED,
            request_id=request_id,
            purpose=report.purpose,
            counts={"opened": report.opened, "failed": report.failed, "unreadable": report.unreadable},
        )
        await self.audit.append_many([record])
        return record

    async def rotate(self, caller: VerifiedCaller, user_id: str, request_id: str) -> VersionAnswer:
        """Add a version for the user and make it current.

        Raises:
            KeyShredded: the user is shredded.
            KeyServiceUnavailable: the store or audit log is unavailable.
        """
        version = await self.store.rotate(user_id)
        await self.audit.append_many(
            [
                self._record(
                    caller.caller_id,
                    "rotate",
                    [user_id],
                    versions=[version],
                    outcome=Outcome.GRANTED,
                    request_id=request_id,
                )
            ]
        )
        self.metrics.grants.labels("rotate").inc()
        return VersionAnswer(user_id=user_id, version=version)

    async def shred(self, caller: VerifiedCaller, user_id: str, request_id: str) -> ReceiptAnswer:
        """Destroy every key version of the user, record it in the shred ledger and sign a receipt.

        Raises:
            LedgerError: the shred happened in the store but the ledger could not record it (repeat it).
            KeyServiceUnavailable: the store or audit log is unavailable.
        """
        # One time for the store (decrypt answers), the ledger and the receipt, so all three agree.
        at = rfc3339(self._now())
        # A repeated shred destroys nothing new; its receipt still lists every version of the user that is
        # destroyed (from the ledger), so a second receipt never reads as "nothing was erased".
        earlier = {v for e in await self.ledger.load() if e.user_id == user_id for v in e.versions_destroyed}
        shredded = await self.store.shred(user_id, at=at)
        entry = LedgerEntry(
            "shred", user_id, at, versions_destroyed=shredded.versions, max_destroyed=shredded.max_destroyed
        )
        await self.ledger.append(entry)
        self.guard.note(entry)
        unreadable_after = await self.erasure.after_shred(user_id, at)
        receipt = sign_receipt(
            self.signing_key,
            user_id,
            sorted({*shredded.versions, *earlier}),
            at,
            backups_unreadable_after=unreadable_after,
        )
        await self.audit.append_many(
            [
                self._record(
                    caller.caller_id,
                    "shred",
                    [user_id],
                    versions=list(shredded.versions),
                    outcome=Outcome.GRANTED,
                    request_id=request_id,
                )
            ]
        )
        log.info(
            "shredded a user: %d key versions destroyed (request %s)", len(shredded.versions), request_id
        )
        return ReceiptAnswer.model_validate(receipt.to_json())

    async def reinstate(self, caller: VerifiedCaller, user_id: str, request_id: str) -> VersionAnswer:
        """Let a shredded user have keys again: a new version above every destroyed one.

        The reinstate is written to the shred ledger first, so a ledger re-applied after a crash never
        shreds a user who was reinstated.

        Raises:
            UserNotShredded: the user is not shredded.
            KeyServiceUnavailable: the store or audit log is unavailable.
            LedgerError: the ledger cannot be written.
        """
        cur, floor, shredded = await self.store.state(user_id)
        if not shredded:
            raise UserNotShredded("user is not shredded; nothing to reinstate")
        version = max(cur, floor) + 1
        entry = LedgerEntry("reinstate", user_id, rfc3339(self._now()), version=version)
        await self.ledger.append(entry)
        self.guard.note(entry)
        version = await self.store.reinstate(user_id, version)
        await self.audit.append_many(
            [
                self._record(
                    caller.caller_id,
                    "reinstate",
                    [user_id],
                    versions=[version],
                    outcome=Outcome.GRANTED,
                    request_id=request_id,
                )
            ]
        )
        self.metrics.grants.labels("reinstate").inc()
        return VersionAnswer(user_id=user_id, version=version)

    async def read_audit(
        self,
        caller: VerifiedCaller,
        request_id: str,
        *,
        user_id: str | None,
        since: datetime | None,
        limit: int,
    ) -> AuditAnswer:
        """Audit records, oldest first; reading them is itself recorded.

        Raises:
            KeyServiceUnavailable: the audit log is unavailable.
        """
        records = await self.audit.query(user_id=user_id, since=since, limit=limit)
        await self.audit.append_many(
            [
                self._record(
                    caller.caller_id,
                    "audit",
                    [user_id] if user_id else [],
                    outcome=Outcome.GRANTED,
                    request_id=request_id,
                )
            ]
        )
        return AuditAnswer(records=records)

    async def refuse(
        self,
        action: str,
        error: KeyServiceError,
        request_id: str,
        user_ids: Sequence[str] = (),
        *,
        source: str | None = None,
        authenticated: bool = True,
    ) -> bool:
        """Record a refused request in the audit log and metrics before it is answered.

        A refusal before authentication is counted with others of its kind (`edge.RefusalTally`).

        Returns:
            True when the refusal has an audit record of its own, False when it was counted into one.

        Raises:
            KeyServiceUnavailable: the audit log cannot take the record.
        """
        self.metrics.refusals.labels(error.reason).inc()
        if not authenticated:
            return await self.refusals.refused(tally_key(source or "", action, error), request_id)
        record = self._record(
            error.caller_id,
            action,
            user_ids,
            outcome=Outcome.REFUSED,
            request_id=request_id,
            reason=error.reason,
            source=source,
        )
        await self.audit.append_many([record])
        return True

    async def _write_refusal(self, key: TallyKey, count: int | None, request_id: str) -> None:
        source, action, reason, caller = key
        record = self._record(
            caller,
            action,
            (),
            outcome="refused",
            request_id=request_id,
            reason=reason,
            source=source,
            counts=None if count is None else {"refused": count},
        )
        await self.audit.append_many([record])

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """`(ready, details)`: ready when the store answers and is durable (or volatile was allowed)."""
        try:
            await self.redis.ping()
            durable = await self.store.durability()
        except (RedisError, KeyServiceError):
            return False, {"status": "unavailable", "store": "not answering"}
        ready = durable or not self.require_durable
        return ready, {"status": "ok" if ready else "unavailable", "durable": durable}

    async def close(self) -> None:
        """Write the counted refusals, stop the background sweeps and close the Redis connections."""
        await self.refusals.close()
        await self.erasure.close()
        await self.redis.aclose()


def _missing(user_id: str, version: int, reason: str, dates: dict[tuple[str, int], str]) -> MissingKey:
    # Only a shredded version has a destruction date (null when the store kept none).
    if reason == MissingReason.SHREDDED:
        return MissingKey.model_construct(
            user_id=user_id,
            version=version,
            reason=MissingReason.SHREDDED,
            destroyed_at=dates.get((user_id, version)),
        )
    return MissingKey.model_construct(user_id=user_id, version=version, reason=MissingReason(reason))
