"""A junk-token flood from one peer, run as its own process by test_attacks.py so that the flood's client
work does not share an event loop (or a GIL) with the latency the test measures.

    python -m tests.security.flood URL REQUESTS CONCURRENCY
prints one JSON line: how many were sent, the statuses seen and how long it took.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import httpx


async def flood(url: str, requests: int, concurrency: int) -> dict[str, object]:
    statuses: Counter[str] = Counter()
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": "Bearer junk.junk.junk", "Content-Type": "application/json"}
    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                try:
                    response = await client.post(
                        url + "/v1/keys/encrypt", content=b'{"user_ids":["x"]}', headers=headers
                    )
                except httpx.HTTPError as exc:  # a busy machine: count it, keep flooding
                    statuses[type(exc).__name__] += 1
                    continue
                statuses[str(response.status_code)] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"sent": requests, "statuses": dict(statuses), "seconds": round(time.perf_counter() - started, 2)}


if __name__ == "__main__":
    target, count, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(flood(target, count, workers))))
