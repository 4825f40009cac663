"""Scenario 2 — the key service: latency and throughput of encrypt requests for 1 and 1000 users.

`keyservice_process` starts a real `pulseseal keyservice` on a free loopback port with throwaway
credentials, its own key-store prefix (`pulseseal:bench:<random>:` on the key-store Redis at
`PULSESEAL_KEYSTORE_REDIS_URL`) and its own shred ledger in a temporary directory; everything is removed
afterwards. Later scenarios share the same process through `BenchContext.shared`.

Requests go one at a time through the client library with the cache bypassed (`use_cache=False`), so
every sample is one full signed round trip: token minting, JWT verification, jti check, the store read,
unwrapping, the audit append, JSON and `DataKey` handles. Requests/s is requests over the wall time of
the sequential loop (one caller; the service is not saturated by it).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from bench.harness import BenchContext
from bench.results import Figure, ScenarioResult
from bench.timing import Latency, latency
from keyservice.bootstrap import authenticated_url
from keyservice.client import KeyServiceClient
from shell.credentials import ensure_dev_credentials, load_private_key
from shell.processes import StartFailed, free_port, spawn


@dataclass(frozen=True, slots=True)
class RunningKeyService:
    """A key service started for the benchmark and the caller key that may ask it for keys."""

    url: str
    encryptor_key: Ed25519PrivateKey
    prefix: str
    credentials_dir: Path
    """Holds `encryptor.pem`: an encryptor process of a later scenario can use it as its caller key."""


def write_credentials(directory: Path) -> Ed25519PrivateKey:
    """Throwaway key service credentials in `directory`, made as `pulseseal services up` makes them;
    returns the `encryptor` caller's private key."""
    ensure_dev_credentials(directory)
    return load_private_key(directory / "encryptor.pem")


@asynccontextmanager
async def keyservice_process(
    redis_url: str, *, start_timeout_s: float = 30.0
) -> AsyncIterator[RunningKeyService]:
    """Run `pulseseal keyservice` on a free port for the duration of the block, then clean up.

    Raises:
        RuntimeError: it did not become healthy in time (the message has the last line it logged).
    """
    prefix = f"pulseseal:bench:{secrets.token_hex(4)}:"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pulseseal-bench-") as home:
        credentials = Path(home) / "credentials"
        encryptor = write_credentials(credentials)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSESEAL_")}
        env |= {
            "PULSESEAL_HOME": home,
            "PULSESEAL_KEYSTORE_REDIS_URL": redis_url,
            "PULSESEAL_KEYSTORE_PREFIX": prefix,
            "PULSESEAL_SHRED_LEDGER_FILE": str(Path(home) / "shred-ledger.ndjson"),
            "PULSESEAL_KEYSERVICE_HOST": "127.0.0.1",
            "PULSESEAL_KEYSERVICE_PORT": str(port),
        }
        log_path = Path(home) / "keyservice.log"
        child = spawn(
            "keyservice", ["keyservice", "--log-level", "warning"], env=env, log=log_path, append=False
        )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                await child.wait_ready_async(url + "/healthz", start_timeout_s)
            except StartFailed:
                lines = log_path.read_text(errors="replace").strip().splitlines()
                raise RuntimeError(
                    f"the benchmark's key service did not start: {lines[-1] if lines else 'no output'}"
                ) from None
            yield RunningKeyService(url, encryptor, prefix, credentials)
        finally:
            await child.stop_async(10)
            await _delete_prefix(redis_url, prefix)


async def _delete_prefix(redis_url: str, prefix: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        batch: list[bytes] = []
        async for name in redis.scan_iter(match=prefix + "*", count=1000):
            batch.append(name)
            if len(batch) >= 500:
                await redis.delete(*batch)
                batch = []
        if batch:
            await redis.delete(*batch)
    finally:
        await redis.aclose()


def shared_keyservice(ctx: BenchContext) -> AbstractAsyncContextManager[RunningKeyService]:
    """The opener for `ctx.shared("keyservice", ...)`."""
    return keyservice_process(authenticated_url(ctx.settings))


async def sequential(
    client: KeyServiceClient, users: list[str], requests: int, warmup: int
) -> tuple[Latency, float]:
    """Latency of `requests` sequential uncached encrypt requests for `users`, and requests per second.

    Raises:
        RuntimeError: the key service refused a user.
    """
    for _ in range(warmup):
        await client.encrypt_keys(users, use_cache=False)
    samples = []
    started = time.perf_counter()
    for _ in range(requests):
        begin = time.perf_counter()
        grant = await client.encrypt_keys(users, use_cache=False)
        samples.append(time.perf_counter() - begin)
        if len(grant.keys) != len(users):
            raise RuntimeError("the key service refused some users")
    return latency(samples), requests / (time.perf_counter() - started)


async def first_use(client: KeyServiceClient, rounds: int, tag: str) -> Latency:
    """Latency of encrypt requests for 1000 users the key service has never seen (keys created)."""
    samples = []
    for round_ in range(rounds):
        fresh = [f"bench-new-{tag}-{round_}-{n}" for n in range(1000)]
        begin = time.perf_counter()
        await client.encrypt_keys(fresh, use_cache=False)
        samples.append(time.perf_counter() - begin)
    return latency(samples)


async def run(ctx: BenchContext, result: ScenarioResult) -> None:
    """Measure 1-key and 1000-key encrypt requests against the benchmark's key service."""
    service = await ctx.shared("keyservice", shared_keyservice)
    one_n = ctx.pick(quick=300, full=3000)
    thousand_n = ctx.pick(quick=150, full=2000)
    first_rounds = ctx.pick(quick=2, full=5)
    result.notes.append(
        f"sequential requests through the client library, cache bypassed: {one_n} for 1 key, "
        f"{thousand_n} for 1000 keys (after warm-up), {first_rounds} first-use requests of 1000 new users"
    )
    async with KeyServiceClient(service.url, "encryptor", service.encryptor_key, retries=0) as client:
        ctx.say(f"  keyservice: {one_n} requests for 1 key")
        one, one_rps = await sequential(client, ["bench-one"], one_n, warmup=ctx.pick(quick=20, full=100))
        _add_latency(result, "one_key", "1-key request", one, one_rps, 1)
        ctx.say(f"  keyservice: {thousand_n} requests for 1000 keys")
        users = [f"bench-{n}" for n in range(1000)]
        thousand, thousand_rps = await sequential(
            client, users, thousand_n, warmup=ctx.pick(quick=5, full=20)
        )
        _add_latency(result, "thousand_keys", "1000-key request", thousand, thousand_rps, 1000)
        created = await first_use(client, first_rounds, secrets.token_hex(3))
        result.add(
            Figure(
                "thousand_new_keys_p50_ms",
                "1000-key request, all keys new (created), p50",
                round(created.p50_ms, 2),
                "ms",
                f"n={created.n}, max {created.max_ms:.1f} ms",
            )
        )
    result.notes.append(
        "the encryptor's key-cache hit ratio is measured during scenario 3's drain and added here when "
        "scenario 3 runs"
    )


def _add_latency(result: ScenarioResult, name: str, label: str, lat: Latency, rps: float, keys: int) -> None:
    detail = {"n": lat.n, "p90_ms": round(lat.p90_ms, 3)}
    result.add(Figure(f"{name}_p50_ms", f"{label}, p50", round(lat.p50_ms, 2), "ms", detail=detail))
    result.add(
        Figure(f"{name}_p99_ms", f"{label}, p99", round(lat.p99_ms, 2), "ms", f"max {lat.max_ms:.1f} ms")
    )
    result.add(
        Figure(
            f"{name}_requests_per_s", f"{label}, requests/s", round(rps, 1), "req/s", "one caller, sequential"
        )
    )
    if keys > 1:
        result.add(Figure(f"{name}_keys_per_s", f"{label}, keys/s", round(rps * keys), "keys/s"))
