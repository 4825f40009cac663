"""Key-service latency: p50/p99 of encrypt requests for 1 and 1000 users, on loopback.

The standalone form of `pulseseal bench --scenario keyservice`, with the same code (`bench.keyservice`):
it starts its own `pulseseal keyservice` (throwaway credentials, a unique key prefix on the key-store
Redis at PULSESEAL_KEYSTORE_REDIS_URL, its own shred ledger; all removed afterwards) and measures
sequential requests made through the client library with the cache bypassed, so every sample is one
full signed HTTP round trip: token minting, JWT verification, jti check, one Lua read, unwrapping, audit
append, JSON, `DataKey` handles.

    .venv/bin/python -m bench.keyservice_latency --requests 3000 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
from dataclasses import asdict
from typing import Any

from bench.keyservice import first_use, keyservice_process, sequential
from keyservice.client import KeyServiceClient


async def run(redis_url: str, requests: int) -> dict[str, Any]:
    """Start a key service, measure, stop it; the percentiles per case."""
    async with (
        keyservice_process(redis_url) as service,
        KeyServiceClient(service.url, "encryptor", service.encryptor_key, retries=0) as client,
    ):
        created = await first_use(client, 5, secrets.token_hex(3))
        one, one_rps = await sequential(client, ["bench-one"], requests, warmup=50)
        thousand, thousand_rps = await sequential(
            client, [f"bench-{n}" for n in range(1000)], requests, warmup=50
        )
    return {
        "one_key": asdict(one) | {"requests_per_s": round(one_rps, 1)},
        "thousand_keys": asdict(thousand) | {"requests_per_s": round(thousand_rps, 1)},
        "thousand_keys_first_use": asdict(created),
    }


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per case")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    redis_url = os.environ.get("PULSESEAL_KEYSTORE_REDIS_URL", "redis://127.0.0.1:6380/0")
    result = asyncio.run(run(redis_url, args.requests))
    result["cpus"] = os.cpu_count()
    if args.json:
        print(json.dumps(result))
        return
    for case in ("one_key", "thousand_keys", "thousand_keys_first_use"):
        r = result[case]
        print(
            f"{case:>24}: n={r['n']:<5} p50={r['p50_ms']:.2f} ms  p90={r['p90_ms']:.2f} ms  "
            f"p99={r['p99_ms']:.2f} ms  max={r['max_ms']:.2f} ms"
        )


if __name__ == "__main__":
    main()
