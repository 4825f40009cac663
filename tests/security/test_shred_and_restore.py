"""A shredded user's documents can never be opened again — not even after the key store is restored from a
backup taken before the shred; and a restore brings every other document back.

Runs a real key service on a key-store prefix and shred ledger of the test's own, with the documented
commands (`pulseseal keys backup`, `keys shred`, `keys restore`), and two kinds of restore: the
documented one (merge + ledger re-applied in the same transactions, then a service restart), and a
restore behind a running service's back (raw Redis RESTORE, as a file-level restore or a stale replica
would do), which the service's in-memory copy of the ledger must still catch.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from keyservice.bootstrap import authenticated_url
from keyservice.client import KeyServiceClient
from keyservice.wire.errors import KeyShredded
from pulseseal.envelope import IntegrityError, open_sealed, seal
from pulseseal.settings import Settings
from schemas import validate_event
from tests.factories import random_events
from tests.processes import ROOT, Component, free_port, start, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VICTIM, KEEPER = "sec-victim", "sec-keeper"


@pytest.fixture
def own_env(pipeline_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """The session's servers, but a key-store prefix, ledger and port of this test's own."""
    port = free_port()
    prefix = f"pulseseal:test:restore:{secrets.token_hex(4)}:"
    env = {
        **pipeline_env,
        "PULSESEAL_KEYSTORE_PREFIX": prefix,
        "PULSESEAL_SHRED_LEDGER_FILE": str(tmp_path / "ledger" / "shred-ledger.ndjson"),
        "PULSESEAL_KEYSERVICE_PORT": str(port),
        "PULSESEAL_KEYSERVICE_URL": f"http://127.0.0.1:{port}",
    }
    yield env
    store = redis.Redis.from_url(authenticated_url(Settings()))
    try:
        for name in store.scan_iter(match=f"{prefix}*", count=1000):
            store.delete(name)
    finally:
        store.close()


def pulseseal(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "shell", *args],
        # The whole environment: a run with other servers (PULSESEAL_*_URL) must reach the same ones.
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _settings(env: dict[str, str]) -> Settings:
    return Settings(keyservice_url=env["PULSESEAL_KEYSERVICE_URL"])


async def _seal_for(env: dict[str, str]) -> list[dict[str, Any]]:
    events = random_events(40, [VICTIM, KEEPER], random.Random(61))
    async with KeyServiceClient.from_settings(_settings(env), "encryptor") as encryptor:
        keys = (await encryptor.encrypt_keys({VICTIM, KEEPER})).keys
    return [seal(validate_event(e), keys[e["user_id"]]) for e in events]


async def _open(env: dict[str, str], documents: list[dict[str, Any]]) -> tuple[int, int, dict[str, str]]:
    refs = {(d["user_id"], d["key_version"]) for d in documents}
    async with KeyServiceClient.from_settings(_settings(env), "auditor") as auditor:
        granted = await auditor.decrypt_keys(refs, purpose="security test: after restore")
    opened = failed = 0
    for doc in documents:
        key = granted.keys.get((doc["user_id"], doc["key_version"]))
        try:
            if key is None:
                raise IntegrityError
            open_sealed(doc, key)
            opened += 1
        except IntegrityError:
            failed += 1
    return opened, failed, {u: reason for (u, _), reason in granted.missing.items()}


async def _encrypt_refused(env: dict[str, str]) -> dict[str, str]:
    async with KeyServiceClient.from_settings(_settings(env), "encryptor") as encryptor:
        return dict((await encryptor.encrypt_keys([VICTIM, KEEPER], use_cache=False)).refused)


def _restart(service: Component, env: dict[str, str], logs: Path) -> Component:
    service.stop()
    replacement = start("keyservice", ["keyservice"], env, logs)
    wait_healthy(replacement, env["PULSESEAL_KEYSERVICE_URL"] + "/healthz")
    return replacement


def test_a_restore_from_before_a_shred_opens_everything_but_the_shredded_users_documents(
    own_env: dict[str, str], tmp_path: Path
) -> None:
    prefix = own_env["PULSESEAL_KEYSTORE_PREFIX"]
    store = redis.Redis.from_url(authenticated_url(Settings()))
    service = start("keyservice", ["keyservice"], own_env, tmp_path / "logs")
    try:
        wait_healthy(service, own_env["PULSESEAL_KEYSERVICE_URL"] + "/healthz")
        documents = asyncio.run(_seal_for(own_env))
        by_user = {u: sum(1 for d in documents if d["user_id"] == u) for u in (VICTIM, KEEPER)}
        assert asyncio.run(_open(own_env, documents))[:2] == (len(documents), 0)

        backup = tmp_path / "keystore.backup"
        assert "backed up 2 key versions of 2 users" in pulseseal(
            own_env, "keys", "backup", "--out", str(backup)
        )
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
        raw_victim = store.dump(f"{prefix}u:{VICTIM}")  # a raw pre-shred copy, for the second restore
        pulseseal(own_env, "keys", "shred", "--user-id", VICTIM, "--yes")

        # Disaster: the key store is lost. The documented restore, then a restart of the service.
        for name in store.scan_iter(match=f"{prefix}*", count=1000):
            store.delete(name)
        restored = pulseseal(own_env, "keys", "restore", str(backup))
        assert "restored 2 key versions of 2 users" in restored
        assert "1 versions destroyed again, 1 users shredded again" in restored
        service = _restart(service, own_env, tmp_path / "logs")
        opened, failed, missing = asyncio.run(_open(own_env, documents))
        assert (opened, failed) == (by_user[KEEPER], by_user[VICTIM])
        assert missing == {VICTIM: "shredded"}
        assert asyncio.run(_encrypt_refused(own_env)) == {VICTIM: "shredded"}

        # A restore behind the running service's back: the shredded key is in Redis again, yet never leaves.
        assert raw_victim is not None
        store.restore(f"{prefix}u:{VICTIM}", 0, raw_victim, replace=True)
        assert store.hexists(f"{prefix}u:{VICTIM}", "v:1")
        opened, failed, missing = asyncio.run(_open(own_env, documents))
        assert (opened, failed, missing) == (by_user[KEEPER], by_user[VICTIM], {VICTIM: "shredded"})
        assert not store.hexists(f"{prefix}u:{VICTIM}", "v:1"), "the service re-applied the ledger"
        assert asyncio.run(_encrypt_refused(own_env)) == {VICTIM: "shredded"}
        assert "re-applied the ledger" in service.log()
    finally:
        service.stop()
        store.close()


def test_the_shred_ledger_lives_apart_from_the_keys_and_is_private(
    own_env: dict[str, str], tmp_path: Path
) -> None:
    service = start("keyservice", ["keyservice"], own_env, tmp_path / "logs")
    try:
        wait_healthy(service, own_env["PULSESEAL_KEYSERVICE_URL"] + "/healthz")
        pulseseal(own_env, "keys", "shred", "--user-id", VICTIM, "--yes")
        with pytest.raises(KeyShredded):
            asyncio.run(_current_key(own_env, VICTIM))
    finally:
        service.stop()
    ledger = Path(own_env["PULSESEAL_SHRED_LEDGER_FILE"])
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    assert stat.S_IMODE(ledger.parent.stat().st_mode) == 0o700
    assert VICTIM in ledger.read_text()
    assert '"signature"' in ledger.read_text()


async def _current_key(env: dict[str, str], user: str) -> object:
    async with KeyServiceClient.from_settings(_settings(env), "encryptor") as encryptor:
        return await encryptor.current_key(user)
