"""Erasure figures (docs/benchmarks.md, "Erasure"): a key store of N users, then
1. the key store's disk size before and after one AOF rewrite, and how long that rewrite takes;
2. shreds/s: M shreds at once through `KeyService.shred` (the service's own code, in process, without
   HTTP or token checks), each answered only after a rewrite that began after its deletion;
3. receipt to cache drop: 100 shreds over real HTTP (uvicorn on loopback), one every 50 ms, while a client
   with a `ShredFollower` has every victim's key cached; for each, when the follower dropped it, measured
   from the receipt's `destroyed_at` and from the moment the receipt arrived (negative: before it).

Run against a key-store Redis of its own (it rewrites the AOF and loads N users under a throwaway prefix,
removed afterwards):
    python -m bench.erasure --redis-url redis://127.0.0.1:6392/0 --users 1000000
Everything runs in one process on one event loop (service, follower, admin client), so the latencies
include their contention; on the 2-core machine of docs/benchmarks.md, shared with other work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from redis.asyncio import Redis

from keyservice.app import create_app
from keyservice.auth import VerifiedCaller
from keyservice.bootstrap import ServiceOptions, connect_redis, open_service
from keyservice.client import KeyServiceClient
from keyservice.client.shreds import ShredFollower
from keyservice.client.tokens import load_private_key
from keyservice.compaction import AofRewriter
from keyservice.residue import data_dir
from keyservice.service import KeyService
from keyservice.wire.models import ReceiptAnswer
from keyservice.wrapping import MasterKey
from schemas.rfc3339 import parse_rfc3339
from shell.credentials import ensure_dev_credentials

_LOAD_BATCH = 5000


def _disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and p.name != "redis.log")


async def load_users(redis: Redis, master: MasterKey, prefix: str, users: int) -> float:
    """Write `users` users with one wrapped key each, pipelined; returns the seconds it took."""
    started = time.perf_counter()
    for start in range(0, users, _LOAD_BATCH):
        pipe = redis.pipeline(transaction=False)
        for n in range(start, min(users, start + _LOAD_BATCH)):
            user = f"u{n:07d}"
            pipe.hset(f"{prefix}u:{user}", mapping={"cur": 1, "v:1": master.wrap(user, 1, os.urandom(32))})
        await pipe.execute()
    return time.perf_counter() - started


async def _drop_prefix(redis: Redis, prefix: str) -> None:
    names: list[bytes] = []
    async for name in redis.scan_iter(match=f"{prefix}*", count=10_000):
        names.append(name)
        if len(names) >= 10_000:
            await redis.unlink(*names)
            names = []
    if names:
        await redis.unlink(*names)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def shreds_per_second(service: KeyService, users: list[str]) -> tuple[float, int]:
    """Shred `users` at once; returns (shreds/s, AOF rewrites used)."""
    caller = VerifiedCaller("admin", frozenset({"keys:admin"}), "bench")
    rewriter = service.erasure.gate._rewriter
    assert isinstance(rewriter, AofRewriter)
    before = rewriter.rewrites
    started = time.perf_counter()
    await asyncio.gather(*(service.shred(caller, u, f"bench-{u}") for u in users))
    return len(users) / (time.perf_counter() - started), rewriter.rewrites - before


async def cache_drops(
    service: KeyService, credentials: Path, users: list[str]
) -> tuple[list[float], list[float]]:
    """Shred `users` one by one over HTTP; returns the drop delays (s) after `destroyed_at` and after the
    receipt arrived (negative: the cache dropped the key before the receipt came back)."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    encryptor = KeyServiceClient(url, "encryptor", load_private_key(credentials / "encryptor.pem"))
    admin = KeyServiceClient(url, "admin", load_private_key(credentials / "admin.pem"))
    dropped: dict[str, tuple[datetime, float]] = {}
    heard = asyncio.Event()

    def on_shred(user: str) -> None:
        dropped.setdefault(user, (datetime.now(UTC), time.monotonic()))
        heard.set()

    follower = ShredFollower(encryptor, on_shred=on_shred)
    follower.start()
    after_destroyed: list[float] = []
    after_receipt: list[float] = []
    try:
        while not follower.connected:  # noqa: ASYNC110 - polled: the follower has no event for it
            await asyncio.sleep(0.01)
        await encryptor.encrypt_keys(users)  # every victim's key is cached, as in a running encryptor
        arrived: dict[str, float] = {}

        async def shred(user: str) -> ReceiptAnswer:
            receipt = await admin.shred(user)
            arrived[user] = time.monotonic()
            return receipt

        # One shred every 50 ms, not waiting for the answers (each waits for an AOF rewrite).
        tasks = []
        for user in users:
            tasks.append(asyncio.create_task(shred(user)))
            await asyncio.sleep(0.05)
        receipts = await asyncio.gather(*tasks)
        while len(dropped) < len(users):
            heard.clear()
            try:
                await asyncio.wait_for(heard.wait(), 30)
            except TimeoutError:
                missing = sum(1 for u in users if u not in dropped)
                raise AssertionError(
                    f"{missing} of {len(users)} shred notices never reached the follower"
                ) from None
        for user, receipt in zip(users, receipts, strict=True):
            wall, mono = dropped[user]
            after_destroyed.append((wall - parse_rfc3339(receipt.destroyed_at)).total_seconds())
            after_receipt.append(mono - arrived[user])
    finally:
        await follower.aclose()
        await encryptor.aclose()
        await admin.aclose()
        service.erasure.notices.closing = True
        server.should_exit = True
        await task
        service.erasure.notices.closing = False
    return after_destroyed, after_receipt


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main(redis_url: str, users: int, shreds: int, drops: int) -> None:
    """Run the three measurements and print them."""
    prefix = f"pulseseal:bench-erasure:{secrets.token_hex(4)}:"
    with tempfile.TemporaryDirectory() as scratch:
        credentials = Path(scratch)
        ensure_dev_credentials(credentials)
        master = MasterKey.from_file(credentials / "master.key")
        redis = connect_redis(redis_url)
        try:
            directory = await data_dir(redis)
            await redis.hset(
                f"{prefix}meta", mapping={"mk_id": master.key_id_hex, "mk_check": master.check_value}
            )
            print(f"loading {users:,} users ...", flush=True)
            seconds = await load_users(redis, master, prefix, users)
            print(f"loaded {users:,} users in {seconds:.1f} s ({users / seconds:,.0f} users/s)")
            size_before = _disk_bytes(directory)
            started = time.perf_counter()
            await AofRewriter(redis, timeout_s=600).rewrite()
            rewrite_s = time.perf_counter() - started
            size_after = _disk_bytes(directory)
            print(
                f"key store on disk: {size_before / 1e6:,.1f} MB before a rewrite, {size_after / 1e6:,.1f} MB "
                f"after; one rewrite took {rewrite_s:.2f} s"
            )
            options = ServiceOptions(
                redis_url=redis_url,
                prefix=prefix,
                master=master,
                callers_file=credentials / "callers.json",
                signing_key_file=credentials / "keyservice.pem",
                ledger_file=credentials / "no-ledger.ndjson",
                key_ttl_s=60,
                allow_volatile=False,
            )
            service = await open_service(options)
            try:
                rate, rewrites = await shreds_per_second(service, [f"u{n:07d}" for n in range(shreds)])
                print(f"{shreds} concurrent shreds: {rate:,.0f} shreds/s, {rewrites} AOF rewrites")
                victims = [f"u{n:07d}" for n in range(shreds, shreds + drops)]
                after_destroyed, after_receipt = await cache_drops(service, credentials, victims)
                for name, samples in (("destroyed_at", after_destroyed), ("the receipt", after_receipt)):
                    print(
                        f"cache drop after {name} over {len(samples)} shreds: p50 "
                        f"{_percentile(samples, 0.5) * 1000:.1f} ms, p99 {_percentile(samples, 0.99) * 1000:.1f} ms, "
                        f"max {max(samples) * 1000:.1f} ms, mean {statistics.fmean(samples) * 1000:.1f} ms"
                    )
            finally:
                await service.close()
        finally:
            cleaner = connect_redis(redis_url)
            await _drop_prefix(cleaner, prefix)
            await cleaner.aclose()
            await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", required=True, help="a key-store Redis of the benchmark's own")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--shreds", type=int, default=1000)
    parser.add_argument("--drops", type=int, default=100)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.redis_url, arguments.users, arguments.shreds, arguments.drops))
