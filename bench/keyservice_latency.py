"""Key-service latency: p50/p99 of encrypt requests for 1 and 1000 users, on loopback.

By default it starts its own `pulseseal keyservice` (throwaway credentials, a unique key prefix on the
key-store Redis at PULSESEAL_KEYSTORE_REDIS_URL, removed afterwards) and measures sequential requests made
through the client library with the cache bypassed, so every sample is one full signed HTTP round trip:
token minting, JWT verification, jti check, one Lua read, unwrapping, audit append, JSON, `DataKey` handles.

    .venv/bin/python bench/keyservice_latency.py --requests 3000 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis import Redis

from keyservice.client import KeyServiceClient

ROOT = Path(__file__).resolve().parents[1]


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _public(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _credentials(directory: Path) -> Ed25519PrivateKey:
    directory.mkdir(parents=True)
    (directory / "master.key").write_text(base64.b64encode(os.urandom(32)).decode())
    (directory / "keyservice.pem").write_bytes(_pem(Ed25519PrivateKey.generate()))
    encryptor = Ed25519PrivateKey.generate()
    (directory / "encryptor.pem").write_bytes(_pem(encryptor))
    callers = {
        "encryptor": {
            "public_key": _public(encryptor),
            "scopes": ["keys:encrypt"],
            "networks": ["127.0.0.0/8"],
        }
    }
    (directory / "callers.json").write_text(json.dumps({"callers": callers}))
    return encryptor


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(pick(0.90), 2),
        "p99_ms": round(pick(0.99), 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def measure(
    client: KeyServiceClient, users: list[str], requests: int, warmup: int = 50
) -> dict[str, float]:
    """Latency of `requests` sequential uncached encrypt requests for `users`."""
    for _ in range(warmup):
        await client.encrypt_keys(users, use_cache=False)
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        grant = await client.encrypt_keys(users, use_cache=False)
        samples.append(time.perf_counter() - started)
        if len(grant.keys) != len(users):
            raise SystemExit("the key service refused some users")
    return _percentiles(samples)


async def run(url: str, key: Ed25519PrivateKey, requests: int) -> dict[str, Any]:
    async with KeyServiceClient(url, "encryptor", key, retries=0) as client:
        first_use = []
        for round_ in range(5):
            fresh = [f"bench-new-{round_}-{n}" for n in range(1000)]
            started = time.perf_counter()
            await client.encrypt_keys(fresh, use_cache=False)
            first_use.append(time.perf_counter() - started)
        return {
            "one_key": await measure(client, ["bench-one"], requests),
            "thousand_keys": await measure(client, [f"bench-{n}" for n in range(1000)], requests),
            "thousand_keys_first_use": _percentiles(first_use),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per case")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    redis_url = os.environ.get("PULSESEAL_KEYSTORE_REDIS_URL", "redis://127.0.0.1:6380/0")
    prefix = f"pulseseal-bench:{secrets.token_hex(4)}:"
    port = _free_port()
    with tempfile.TemporaryDirectory() as home:
        creds = Path(home) / "credentials"
        key = _credentials(creds)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSESEAL_")}
        env.update(
            {
                "PULSESEAL_HOME": home,
                "PULSESEAL_KEYSTORE_REDIS_URL": redis_url,
                "PULSESEAL_KEYSTORE_PREFIX": prefix,
                "PULSESEAL_KEYSERVICE_PORT": str(port),
            }
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from pulseseal.cli import main; main()",
                "keyservice",
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=ROOT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(url + "/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the key service did not start") from None
                    time.sleep(0.1)
            result = asyncio.run(run(url, key, args.requests))
        finally:
            server.terminate()
            server.wait(timeout=10)
            redis = Redis.from_url(redis_url)
            names = list(redis.scan_iter(match=prefix + "*", count=1000))
            for start in range(0, len(names), 500):
                redis.delete(*names[start : start + 500])
            redis.close()
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
