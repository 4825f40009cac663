"""kill -9 of the key-store Redis right after keys were created: every key is still there afterwards.

Runs a key-store Redis of the test's own (infra/redis.sh, exactly as `pulseseal services up` runs it,
with a temporary PULSESEAL_HOME and a spare port), so killing it disturbs nobody.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from keyservice.store import KeyStore
from keyservice.wrapping import MasterKey
from tests.processes import ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _redis_sh(action: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "infra" / "redis.sh"), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    port = free_port()
    env = {**os.environ, "PULSESEAL_HOME": str(tmp_path / "home"), "PULSESEAL_KEYSTORE_REDIS_PORT": str(port)}
    env.pop("PULSESEAL_KEYSTORE_REDIS_PASSWORD_FILE", None)
    password = secrets.token_urlsafe(32)  # redis.sh starts the store behind it (contract §2)
    (tmp_path / "home" / "credentials").mkdir(parents=True)
    (tmp_path / "home" / "credentials" / "keystore-redis.password").write_text(password + "\n")
    (tmp_path / "home" / "credentials" / "keystore-redis.password").chmod(0o600)
    _redis_sh("up", env)
    try:
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        yield url, env, tmp_path / "home" / "keystore-redis" / "redis.pid"
    finally:
        _redis_sh("down", env)


async def _create(url: str, master: MasterKey, users: list[str]) -> dict[str, str]:
    redis = Redis.from_url(url)
    try:
        store = KeyStore(redis, master, prefix="durability:")
        await store.claim_master()
        keys, shredded = await store.current_keys(users)
        assert shredded == []
        return {k.user_id: k.b64() for k in keys}
    finally:
        await redis.aclose()


async def _read(url: str, master: MasterKey, users: list[str]) -> dict[str, str]:
    redis = Redis.from_url(url)
    try:
        lookup = await KeyStore(redis, master, prefix="durability:").keys_at([(u, 1) for u in users])
        return {k.user_id: k.b64() for k in lookup.found}
    finally:
        await redis.aclose()


async def _fsync_policy(url: str) -> object:
    redis = Redis.from_url(url, decode_responses=True)
    try:
        return (await redis.config_get("appendfsync"))["appendfsync"]
    finally:
        await redis.aclose()


def test_every_key_survives_a_kill_9_right_after_it_was_created(
    own_redis: tuple[str, dict[str, str], Path],
) -> None:
    url, env, pid_file = own_redis
    assert asyncio.run(_fsync_policy(url)) == "always"
    master = MasterKey.from_base64(base64.b64encode(os.urandom(32)).decode())
    created: dict[str, str] = {}
    for round_ in range(5):
        users = [f"durable-{round_}-{i:04d}" for i in range(400)]
        created |= asyncio.run(_create(url, master, users))
        # No pause: the key service has answered, so the keys may already be sealing data.
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        _redis_sh("up", env)
        assert asyncio.run(_read(url, master, list(created))) == created
    assert len(created) == 2000
