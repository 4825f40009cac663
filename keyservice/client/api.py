"""The key service's client library, used by the encryptor and replay.

One request for many users; a key cache that keeps each key no longer than the `expires_in` it was granted
(bounded LRU of `DataKey` handles that never print their bytes); single-flight (concurrent misses for one
key make one request); retries with backoff and jitter for transient failures; a fresh signed token per
attempt; and specific exceptions (`KeyShredded`, `KeyUnknown`, `KeyServiceUnavailable`,
`CallerNotAllowed`, `TokenRejected`, ...).

    async with KeyServiceClient.from_settings(load_settings(), role="encryptor") as keys:
        grant = await keys.encrypt_keys(["alice", "bob"])   # EncryptKeys(keys={...}, refused={...})
        key = await keys.current_key("alice")              # DataKey, or raises KeyShredded
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.client.cache import KeyCache, Outcome, SingleFlight
from keyservice.client.problems import TRANSIENT_STATUS, error_from
from keyservice.client.replicas import Replicas, Transports, Turns, attempts_for, split_list
from keyservice.client.tokens import load_private_key, mint_token
from keyservice.wire.audit import AuditAnswer, AuditRecord
from keyservice.wire.errors import (
    KeyServiceError,
    KeyServiceUnavailable,
    KeyShredded,
    KeyUnknown,
)
from keyservice.wire.models import (
    MAX_KEYS,
    DecryptAnswer,
    EncryptAnswer,
    GrantedKey,
    MissingReason,
    ReceiptAnswer,
    VersionAnswer,
    parse_answer,
)
from pulseseal.envelope import DataKey, InvalidKeyMaterial
from pulseseal.retry import Backoff, retry, retry_after_s
from pulseseal.settings import Settings
from schemas.rfc3339 import format_rfc3339 as rfc3339

# A shred is answered after an AOF rewrite of the whole key store (contract §6): ~4 s at 1M users.
SHRED_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class EncryptKeys:
    """Current keys per user, and the users refused with the reason (`shredded`)."""

    keys: dict[str, DataKey]
    refused: dict[str, str]


@dataclass(frozen=True, slots=True)
class DecryptKeys:
    """Keys per `(user_id, version)`, the missing ones with the reason (`shredded` or `unknown`), and when
    each shredded version fetched by this call was destroyed (RFC 3339; absent when the service has no date,
    or when the answer came from another caller's request in flight for the same version)."""

    keys: dict[tuple[str, int], DataKey]
    missing: dict[tuple[str, int], str]
    destroyed_at: dict[tuple[str, int], str] = field(default_factory=dict)


class KeyServiceClient:
    """A caller of the key service.

    Args:
        base_url: The key service URL, or its replicas' URLs (a list, or one comma-separated string):
            each request starts at the next replica in turn and fails over to the next
            (keyservice/client/replicas.py); `http://` only to loopback.
        caller_id: This caller's id (`iss`), as in the callers file.
        private_key: This caller's Ed25519 key.
        ca_file: CA bundle to verify an `https://` key service with (default: the system's).
        cache_size: Keys cached at most (LRU), per kind (current keys; keys by version).
        timeout_s: Timeout of one HTTP attempt.
        retries: Further attempts after a transient failure (connection error, timeout, 429/502/503/504),
            each to the next replica; every replica is tried at least once.
        backoff_s: First backoff; doubles each retry, with full jitter, capped at 2 s. A 429 or 503 with
            `Retry-After` waits what the service asked instead (at most 30 s; `pulseseal.retry`). The
            move to a replica this request has not tried yet does not wait.
        transport: httpx transport, or one per URL (tests pass ASGI transports).
        sleep: Injectable for tests.

    Raises:
        InsecureTransport: a URL is `http://` to a non-loopback host.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        caller_id: str,
        private_key: Ed25519PrivateKey,
        *,
        ca_file: Path | None = None,
        cache_size: int = 100_000,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        transport: Transports = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        urls = split_list(base_url) if isinstance(base_url, str) else list(base_url)
        self._replicas = Replicas.open(urls, ca_file=ca_file, timeout_s=timeout_s, transport=transport)
        self.caller_id = caller_id
        self._key = private_key
        self._retries = retries
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._current = SingleFlight[str](KeyCache(cache_size))
        self._versions = SingleFlight[tuple[str, int]](KeyCache(cache_size))
        self.requests_sent = 0

    @classmethod
    def from_settings(cls, settings: Settings, role: str, **options: Any) -> KeyServiceClient:
        """A client with the URL, CA, cache size and caller key of `settings`.

        The caller key is `PULSESEAL_CALLER_KEY_FILE`, else `HOME/credentials/<role>.pem`; the caller id is
        the key file's stem.

        Raises:
            CredentialError: the caller key file is missing or not an Ed25519 key.
            InsecureTransport: the URL is `http://` to a non-loopback host.
        """
        key_file = settings.credential(settings.caller_key_file, f"{role}.pem")
        return cls(
            settings.keyservice_urls,
            key_file.stem,
            load_private_key(key_file),
            ca_file=settings.keyservice_ca,
            cache_size=settings.key_cache_size,
            **options,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def current_key_cache(self) -> KeyCache[str]:
        """The cache of current keys (its `hits`/`misses` feed the encryptor's metrics)."""
        return self._current.cache

    @property
    def caches(self) -> tuple[KeyCache[str], KeyCache[tuple[str, int]]]:
        """Both key caches (current keys; keys by version), for the shred follower (client/shreds.py)."""
        return self._current.cache, self._versions.cache

    @property
    def replica_urls(self) -> tuple[str, ...]:
        """The key-service URLs this client spreads its requests over."""
        return self._replicas.urls

    def stream(
        self, path: str, scope: str, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[httpx.Response]:
        """An open `GET` of a streaming endpoint (the shred stream) on the next replica in turn, with a
        fresh token; no retries (its reader reconnects, and so reaches the next replica), and no read
        timeout (the stream is held open; its reader watches for silence itself)."""
        return self._stream(path, scope, headers)

    @asynccontextmanager
    async def _stream(
        self, path: str, scope: str, headers: Mapping[str, str]
    ) -> AsyncIterator[httpx.Response]:
        replica = self._replicas.order()[0]
        token = mint_token(self._key, self.caller_id, method="GET", path=path, body=b"", scope=scope)
        try:
            async with replica.http.stream(
                "GET",
                path,
                headers={**headers, "Authorization": f"Bearer {token}"},
                timeout=httpx.Timeout(replica.http.timeout.connect, read=None),
            ) as response:
                yield response
        except httpx.TransportError:
            self._replicas.failed(replica)
            raise

    async def aclose(self) -> None:
        """Close connections and forget every cached key."""
        self._current.cache.clear()
        self._versions.cache.clear()
        await self._replicas.aclose()

    # --- keys ---

    async def encrypt_keys(self, user_ids: Iterable[str], *, use_cache: bool = True) -> EncryptKeys:
        """The current key of each user (created on first use), from the cache or in as few requests as
        possible (one per 1000 users missing).

        Raises:
            KeyServiceUnavailable: not reachable after the retries.
            CallerNotAllowed, TokenRejected, RequestInvalid: the key service refused the request.
        """
        if not use_cache:
            outcomes = await self._fetch_current(list(dict.fromkeys(user_ids)))
        else:
            outcomes = await self._current.get_many(user_ids, self._fetch_current)
        return EncryptKeys(
            {u: o for u, o in outcomes.items() if isinstance(o, DataKey)},
            {u: o for u, o in outcomes.items() if isinstance(o, str)},
        )

    async def current_key(self, user_id: str) -> DataKey:
        """One user's current key.

        Raises:
            KeyShredded: the user is shredded.
            KeyServiceUnavailable: not reachable after the retries.
        """
        grant = await self.encrypt_keys([user_id])
        if user_id in grant.keys:
            return grant.keys[user_id]
        raise KeyShredded("user is shredded")

    async def decrypt_keys(self, refs: Iterable[tuple[str, int]], *, purpose: str) -> DecryptKeys:
        """Given key versions (to open sealed documents); `purpose` goes to the audit log.

        Raises:
            KeyServiceUnavailable: not reachable after the retries.
            CallerNotAllowed, TokenRejected, RequestInvalid: the key service refused the request.
        """

        dates: dict[tuple[str, int], str] = {}

        async def fetch(batch: list[tuple[str, int]]) -> dict[tuple[str, int], Outcome]:
            return await self._fetch_versions(batch, purpose, dates)

        outcomes = await self._versions.get_many(refs, fetch)
        missing = {r: o for r, o in outcomes.items() if isinstance(o, str)}
        return DecryptKeys(
            {r: o for r, o in outcomes.items() if isinstance(o, DataKey)},
            missing,
            {r: d for r, d in dates.items() if missing.get(r) == MissingReason.SHREDDED},
        )

    async def key_version(self, user_id: str, version: int, *, purpose: str) -> DataKey:
        """One key version.

        Raises:
            KeyShredded: the version was destroyed.
            KeyUnknown: the version never existed.
            KeyServiceUnavailable: not reachable after the retries.
        """
        grant = await self.decrypt_keys([(user_id, version)], purpose=purpose)
        key = grant.keys.get((user_id, version))
        if key is not None:
            return key
        if grant.missing.get((user_id, version)) == MissingReason.SHREDDED:
            raise KeyShredded("key version destroyed")
        raise KeyUnknown("no such key version")

    async def _fetch_current(self, user_ids: list[str]) -> dict[str, Outcome]:
        chunks = [user_ids[i : i + MAX_KEYS] for i in range(0, len(user_ids), MAX_KEYS)]
        answers = await asyncio.gather(
            *(self._request("POST", "/v1/keys/encrypt", "keys:encrypt", {"user_ids": c}) for c in chunks)
        )
        outcomes: dict[str, Outcome] = {}
        for body in answers:
            answer = parse_answer(EncryptAnswer, body)
            for key in answer.keys:
                outcomes[key.user_id] = _data_key(key)
            for refused in answer.refused:
                outcomes[refused.user_id] = refused.reason.value
        return outcomes

    async def _fetch_versions(
        self, refs: list[tuple[str, int]], purpose: str, dates: dict[tuple[str, int], str]
    ) -> dict[tuple[str, int], Outcome]:
        chunks = [refs[i : i + MAX_KEYS] for i in range(0, len(refs), MAX_KEYS)]
        answers = await asyncio.gather(
            *(
                self._request(
                    "POST",
                    "/v1/keys/decrypt",
                    "keys:decrypt",
                    {"keys": [{"user_id": u, "version": v} for u, v in c], "purpose": purpose},
                )
                for c in chunks
            )
        )
        outcomes: dict[tuple[str, int], Outcome] = {}
        for body in answers:
            answer = parse_answer(DecryptAnswer, body)
            for key in answer.keys:
                outcomes[(key.user_id, key.version)] = _data_key(key)
            for missing in answer.missing:
                ref = (missing.user_id, missing.version)
                outcomes[ref] = missing.reason.value
                if missing.destroyed_at is not None:
                    dates[ref] = missing.destroyed_at
        return outcomes

    async def report_replay(
        self, user_id: str, *, purpose: str, opened: int, failed: int, unreadable: int
    ) -> AuditRecord:
        """Write a finished replay of `user_id` to the audit log (`POST /v1/audit/replays`).

        Retried like a key request: in the rare case of an answer lost after the record was written, the
        audit log holds the replay twice rather than not at all.

        Raises:
            KeyServiceUnavailable: not reachable after the retries, or its audit log is unavailable.
            CallerNotAllowed, TokenRejected, RequestInvalid: the key service refused the report.
        """
        payload = {
            "user_id": user_id,
            "purpose": purpose,
            "opened": opened,
            "failed": failed,
            "unreadable": unreadable,
        }
        answer = await self._request("POST", "/v1/audit/replays", "keys:decrypt", payload)
        return parse_answer(AuditRecord, answer)

    # --- administration ---

    async def rotate(self, user_id: str) -> int:
        """Add a key version for the user; returns the new current version.

        Raises:
            KeyShredded: the user is shredded.
        """
        answer = await self._request(
            "POST", f"/v1/users/{user_id}/rotate", "keys:admin", None, idempotent=False
        )
        self._current.cache.discard(user_id)
        return parse_answer(VersionAnswer, answer).version

    async def shred(self, user_id: str) -> ReceiptAnswer:
        """Destroy every key version of the user; returns the signed erasure receipt.

        The answer waits until the key store's files no longer hold the keys (an AOF rewrite: seconds on
        a store of millions of users), so this request may take up to `SHRED_TIMEOUT_S`.
        """
        self._current.cache.discard(user_id)
        answer = await self._request(
            "DELETE", f"/v1/users/{user_id}", "keys:admin", None, timeout_s=SHRED_TIMEOUT_S
        )
        return parse_answer(ReceiptAnswer, answer)

    async def reinstate(self, user_id: str) -> int:
        """Let a shredded user have keys again; returns the new version.

        Raises:
            UserNotShredded: the user is not shredded.
        """
        path = f"/v1/users/{user_id}/reinstate"
        answer = await self._request("POST", path, "keys:admin", None, idempotent=False)
        return parse_answer(VersionAnswer, answer).version

    async def audit(
        self, *, user_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[AuditRecord]:
        """Audit records, oldest first."""
        params = {"limit": str(limit)}
        if user_id is not None:
            params["user_id"] = user_id
        if since is not None:
            params["since"] = rfc3339(since)
        answer = await self._request("GET", "/v1/audit", "keys:admin", None, params=params)
        return parse_answer(AuditAnswer, answer).records

    async def healthy(self) -> bool:
        """Whether a replica of the key service answers `GET /healthz` with 200 (its store reachable and
        durable): one is enough, requests fail over to it."""
        for replica in self._replicas.order():
            try:
                if (await replica.http.get("/healthz")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
        return False

    async def call(
        self,
        method: str,
        path: str,
        scope: str,
        payload: Mapping[str, Any] | None,
        *,
        idempotent: bool = True,
    ) -> bytes:
        """One signed request, retried like the rest, to an endpoint whose client lives in its own module
        (keyservice/client/transport_keys.py); the answer's bytes, for `parse_answer`.

        Raises:
            KeyServiceError: the subclass that matches the refusal, as for every other call.
        """
        return await self._request(method, path, scope, payload, idempotent=idempotent)

    # --- transport ---

    async def _request(
        self,
        method: str,
        path: str,
        scope: str,
        payload: Mapping[str, Any] | None,
        *,
        idempotent: bool = True,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} if body else {}
        turns = Turns(self._replicas.order())

        async def attempt() -> bytes:
            replica, fresh_next = turns.take()
            # A fresh token each attempt: a token is single-use (across replicas: they share the used ids)
            # and bound to this request.
            token = mint_token(self._key, self.caller_id, method=method, path=path, body=body, scope=scope)
            self.requests_sent += 1
            try:
                response = await replica.http.request(
                    method,
                    path,
                    content=body,
                    params=params,
                    timeout=httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s,
                    headers={**headers, "Authorization": f"Bearer {token}"},
                )
            except httpx.TransportError as exc:
                self._replicas.failed(replica)
                away = KeyServiceUnavailable(f"key service not reachable: {type(exc).__name__}")
                # A request that may have been sent is retried only when repeating it is harmless.
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                raise (_Transient(away, fresh_next) if idempotent or not sent else away) from None
            if response.status_code == 200:
                self._replicas.answered(replica)
                return response.content
            error = error_from(response)
            if response.status_code in TRANSIENT_STATUS and idempotent:
                self._replicas.failed(replica)
                asked = retry_after_s(response.headers.get("Retry-After"))
                raise _Transient(error, fresh_next if fresh_next is not None else asked)
            raise error

        try:
            return await retry(
                attempt,
                on=lambda exc: isinstance(exc, _Transient),
                backoff=Backoff(initial_s=self._backoff_s, cap_s=2.0, jitter=1.0),
                attempts=attempts_for(self._retries, len(turns)),
                sleep=self._sleep,
            )
        except _Transient as last:
            raise last.error from None


class _Transient(Exception):
    """A failed attempt worth repeating: the error to raise if none is left, and the server's
    `Retry-After` (seconds) when it sent one."""

    def __init__(self, error: KeyServiceError, retry_after_s: float | None) -> None:
        super().__init__(error.detail)
        self.error = error
        self.retry_after_s = retry_after_s


def _data_key(granted: GrantedKey) -> DataKey:
    try:
        return DataKey.from_base64(granted.user_id, granted.version, granted.key, ttl_s=granted.expires_in)
    except InvalidKeyMaterial:
        raise KeyServiceError("key service sent a malformed key", reason="bad_response") from None
