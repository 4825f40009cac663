"""The key-service replicas a caller knows (`PULSESEAL_KEYSERVICE_URL` as a list) and which to ask next.

Replicas share everything through the key store (keys, shred ledger and notices, used token ids, audit),
so any of them can answer any request. A caller spreads its requests: each request starts at the next
replica in turn (the first one at a random place, so many callers do not all start on the same one) and,
when that replica fails (connection refused, timeout, 5xx), the same request goes to the next one. A
replica that just failed is asked last for `cooldown_s`, so a dead one costs one failed attempt now and
then instead of one per request.

A retried request is signed afresh by its caller (`KeyServiceClient`): every token is single-use, and the
used-token ids are kept in the key store that all replicas share, so a token that reached replica A is
refused by replica B too. The token's audience is the service (`pulseseal-keyservice`, contract §6), not
one replica: replicas are interchangeable, and the shared replay guard, not the audience, is what stops
a token from being used twice.

    replicas = Replicas.open(["http://127.0.0.1:8700", "http://127.0.0.1:8701"], timeout_s=5.0)
    for replica in replicas.order():   # this request's order
        ...replica.http.post(...)      # on failure: replicas.failed(replica), then the next
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from keyservice.client.transport import check_client_url

COOLDOWN_S = 5.0

Transports = httpx.AsyncBaseTransport | Mapping[str, httpx.AsyncBaseTransport] | None


@dataclass(slots=True)
class Replica:
    """One key-service replica: its URL and the HTTP client that talks to it."""

    url: str
    http: httpx.AsyncClient = field(repr=False)
    failed_until: float = float("-inf")


class Replicas:
    """The replicas of one caller, in the order to ask them.

    Args:
        replicas: The replicas (at least one).
        cooldown_s: How long a replica that failed is asked last.
        rng: Where the first request starts (injectable for tests).
        clock: Monotonic seconds (injectable for tests).

    Raises:
        ValueError: no replica given.
    """

    def __init__(
        self,
        replicas: Sequence[Replica],
        *,
        cooldown_s: float = COOLDOWN_S,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not replicas:
            raise ValueError("at least one key-service URL is needed")
        self._replicas = list(replicas)
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._next = (rng or random.Random()).randrange(len(self._replicas))

    @classmethod
    def open(
        cls,
        urls: Sequence[str],
        *,
        ca_file: Path | None = None,
        timeout_s: float = 5.0,
        transport: Transports = None,
        cooldown_s: float = COOLDOWN_S,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Replicas:
        """One HTTP client per URL.

        Args:
            urls: The replicas' base URLs (`https://`, or `http://` to loopback).
            ca_file: CA bundle to verify `https://` replicas with (default: the system's).
            timeout_s: Timeout of one HTTP attempt.
            transport: An httpx transport for every replica, or one per URL (tests pass ASGI ones; a URL
                missing from the mapping is reached over the network).
            cooldown_s: How long a replica that failed is asked last.
            rng: Where the first request starts (injectable for tests).
            clock: Monotonic seconds (injectable for tests).

        Raises:
            InsecureTransport: a URL is `http://` to a non-loopback host.
            ValueError: no URL given.
        """
        for url in urls:
            check_client_url(url)
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True

        def client(url: str) -> httpx.AsyncClient:
            chosen = transport.get(url) if isinstance(transport, Mapping) else transport
            # trust_env=False: HTTP(S)_PROXY must never route tokens and data keys through a proxy (in
            # cleartext on plain HTTP); the key service is reached directly or not at all.
            return httpx.AsyncClient(
                base_url=url.rstrip("/"), verify=verify, timeout=timeout_s, transport=chosen, trust_env=False
            )

        return cls([Replica(url, client(url)) for url in urls], cooldown_s=cooldown_s, rng=rng, clock=clock)

    @property
    def urls(self) -> tuple[str, ...]:
        """The replicas' URLs, as given."""
        return tuple(r.url for r in self._replicas)

    def __len__(self) -> int:
        return len(self._replicas)

    def order(self) -> list[Replica]:
        """The order in which one request asks the replicas: starting at the next in turn, those that
        failed within `cooldown_s` last (in the same turn order)."""
        count = len(self._replicas)
        start = self._next
        self._next = (start + 1) % count
        turn = [self._replicas[(start + i) % count] for i in range(count)]
        now = self._clock()
        return [r for r in turn if r.failed_until <= now] + [r for r in turn if r.failed_until > now]

    def failed(self, replica: Replica) -> None:
        """`replica` failed an attempt: ask it last for a while."""
        replica.failed_until = self._clock() + self._cooldown_s

    def answered(self, replica: Replica) -> None:
        """`replica` answered: it is back in turn at once."""
        replica.failed_until = float("-inf")

    async def aclose(self) -> None:
        """Close every replica's connections."""
        for replica in self._replicas:
            await replica.http.aclose()


class Turns:
    """One request's walk over the replicas (`Replicas.order()`): each attempt asks the next one."""

    def __init__(self, order: list[Replica]) -> None:
        self._order = order
        self._tried = 0

    def __len__(self) -> int:
        return len(self._order)

    def take(self) -> tuple[Replica, float | None]:
        """The replica to ask now, and the wait before the next attempt: 0 while a replica this request
        has not tried is left (no reason to wait), else None (the backoff's, or the server's
        `Retry-After`)."""
        replica = self._order[self._tried % len(self._order)]
        self._tried += 1
        return replica, (0.0 if self._tried < len(self._order) else None)


def split_list(urls: str) -> list[str]:
    """The URLs of a comma-separated list (as `PULSESEAL_KEYSERVICE_URL` gives them; the settings have
    checked each entry, and `Replicas.open` checks each for plain HTTP off loopback)."""
    return [url.strip() for url in urls.split(",")]


def attempts_for(retries: int, replicas: int) -> int:
    """Attempts one request makes: `retries` more after the first, and at least one per replica (a
    client with a retry budget smaller than its replica count still tries every replica once)."""
    return max(retries + 1, replicas)
