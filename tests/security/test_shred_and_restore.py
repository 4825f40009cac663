"""A shredded user's documents can never be opened again — not even after the key store is restored from a
backup taken before the shred; and a restore brings every other document back.

Runs real key services on a key-store prefix of the test's own, with the documented commands (`pulseseal
keys backup`, `keys shred`, `keys restore`), and two kinds of restore: the documented one (merge + ledger
re-applied in the same transactions, then a service restart), and a restore behind a running service's
back (raw Redis RESTORE, as a file-level restore or a stale replica would do), which the service's
in-memory copy of the ledger must still catch. The ledger lives in the key store, one for every replica:
two replicas, one of which restored the backup, and a third started afterwards on an empty disk, all
refuse the shredded user. And a backup whose retention ended is refused with one line.
"""

from __future__ import annotations

import asyncio
import json
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
from pulseseal.envelope import IntegrityError, open_sealed, seal
from pulseseal.settings import Settings
from schemas import validate_event
from schemas.rfc3339 import parse_rfc3339
from shell.processes import run
from tests.factories import random_events
from tests.isolation import delete_keys
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
    delete_keys(authenticated_url(Settings()), prefix)


def pulseseal(env: dict[str, str], *args: str) -> str:
    # The whole environment: a run with other servers (PULSESEAL_*_URL) must reach the same ones.
    result = run(args, env={**os.environ, **env}, cwd=ROOT, timeout_s=120)
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

        # Disaster: every user's keys are lost (the ledger and the backup keys beside them are not: a backup
        # is readable only while its backup key exists). The documented restore, then a restart.
        for name in store.scan_iter(match=f"{prefix}u:*", count=1000):
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


def _replica(env: dict[str, str], tmp_path: Path, name: str) -> dict[str, str]:
    """Another key-service replica on the same key store: own port, own (empty) disk."""
    port = free_port()
    return {
        **env,
        "PULSESEAL_SHRED_LEDGER_FILE": str(tmp_path / name / "shred-ledger.ndjson"),
        "PULSESEAL_KEYSERVICE_PORT": str(port),
        "PULSESEAL_KEYSERVICE_URL": f"http://127.0.0.1:{port}",
    }


def test_every_replica_refuses_a_shredded_user_after_one_of_them_restored_a_pre_shred_backup(
    own_env: dict[str, str], tmp_path: Path
) -> None:
    prefix = own_env["PULSESEAL_KEYSTORE_PREFIX"]
    store = redis.Redis.from_url(authenticated_url(Settings()))
    env_a, env_b = own_env, _replica(own_env, tmp_path, "b")
    replicas = [start("keyservice", ["keyservice"], env, tmp_path / "logs") for env in (env_a, env_b)]
    try:
        for env, replica in zip((env_a, env_b), replicas, strict=True):
            wait_healthy(replica, env["PULSESEAL_KEYSERVICE_URL"] + "/healthz")
        documents = asyncio.run(_seal_for(env_a))
        backup = tmp_path / "keystore.backup"
        pulseseal(env_a, "keys", "backup", "--out", str(backup))
        raw_victim = store.dump(f"{prefix}u:{VICTIM}")
        receipt = json.loads(pulseseal(env_a, "keys", "shred", "--user-id", VICTIM, "--yes"))
        assert parse_rfc3339(receipt["backups_unreadable_after"]) > parse_rfc3339(receipt["destroyed_at"])

        # Replica A's operator restores the pre-shred backup, and a raw copy of the user's keys too.
        restored = pulseseal(env_a, "keys", "restore", str(backup))
        # The merge writes nothing the store's floor forbids: the victim's key does not come back.
        assert restored.startswith("restored 0 key versions of 2 users")
        assert raw_victim is not None
        store.restore(f"{prefix}u:{VICTIM}", 0, raw_victim, replace=True)

        # A third replica, started now on an empty disk, knows the shred from the key store's ledger.
        env_c = _replica(own_env, tmp_path, "c")
        replicas.append(start("keyservice", ["keyservice"], env_c, tmp_path / "logs"))
        wait_healthy(replicas[-1], env_c["PULSESEAL_KEYSERVICE_URL"] + "/healthz")
        for env in (env_a, env_b, env_c):
            assert not Path(env["PULSESEAL_SHRED_LEDGER_FILE"]).exists()
            assert asyncio.run(_encrypt_refused(env)) == {VICTIM: "shredded"}
            opened, failed, missing = asyncio.run(_open(env, documents))
            assert missing == {VICTIM: "shredded"}
            assert failed == sum(1 for d in documents if d["user_id"] == VICTIM)
            assert opened == len(documents) - failed
    finally:
        for replica in replicas:
            replica.stop()
        store.close()


def test_a_backup_whose_retention_ended_is_refused_with_one_line(
    own_env: dict[str, str], tmp_path: Path
) -> None:
    prefix = own_env["PULSESEAL_KEYSTORE_PREFIX"]
    store = redis.Redis.from_url(authenticated_url(Settings()))
    service = start("keyservice", ["keyservice"], own_env, tmp_path / "logs")
    try:
        wait_healthy(service, own_env["PULSESEAL_KEYSERVICE_URL"] + "/healthz")
        asyncio.run(_seal_for(own_env))
        backup = tmp_path / "keystore.backup"
        assert "restorable until" in pulseseal(own_env, "keys", "backup", "--out", str(backup))
        # Time passes: the retention of that day's backup key is over (moved back, not waited for).
        day = json.loads(backup.read_bytes().splitlines()[0])["backup_key"]
        record = json.loads(store.hget(f"{prefix}backup-keys", day) or b"{}")
        record["unreadable_after"] = "2000-01-01T00:00:00.000Z"
        store.hset(f"{prefix}backup-keys", day, json.dumps(record))
        result = subprocess.run(
            [sys.executable, "-m", "shell", "keys", "restore", str(backup)],
            env={**os.environ, **own_env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "has expired and can never be restored" in lines[0]
        assert not store.hexists(f"{prefix}backup-keys", day), "the restore's sweep destroyed the key"
    finally:
        service.stop()
        store.close()
