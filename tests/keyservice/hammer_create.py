"""Run as a separate OS process by test_store.py: wait for a start time, then ask for the current keys of
the same users as hard as possible, and print what this process got (user → version, key digest)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
import time

from redis.asyncio import Redis

from keyservice.store import KeyStore
from keyservice.wrapping import MasterKey


async def main(redis_url: str, prefix: str, master_b64: str, users: list[str], start_at: float) -> None:
    redis = Redis.from_url(redis_url)
    store = KeyStore(redis, MasterKey.from_base64(master_b64), prefix=prefix)
    await store.claim_master()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    seen: dict[str, tuple[int, str]] = {}
    # Many concurrent requests, each for every user in a shuffled order, to collide inside Redis.
    batches = [users[i:] + users[:i] for i in range(0, len(users), max(1, len(users) // 8))]
    results = await asyncio.gather(*(store.current_keys(batch) for batch in batches))
    for keys, shredded in results:
        assert not shredded
        for key in keys:
            digest = hashlib.sha256(base64.b64decode(key.b64())).hexdigest()
            if key.user_id in seen and seen[key.user_id] != (key.version, digest):
                raise SystemExit(f"two different keys in one process for {key.user_id}")
            seen[key.user_id] = (key.version, digest)
    await redis.aclose()
    print(json.dumps(seen))


if __name__ == "__main__":
    url, prefix, master, count, start = sys.argv[1:6]
    asyncio.run(main(url, prefix, master, [f"hammer-{n}" for n in range(int(count))], float(start)))
