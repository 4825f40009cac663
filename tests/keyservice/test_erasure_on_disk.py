"""Contract §6, "Erasure holds on disk", checked where the data rests (house style 17): the files of the
key-store Redis the tests talk to (its `CONFIG GET dir`; under `make test` `$PULSESEAL_HOME/keystore-redis/`).

The wrapped keys are read from Redis before the shred, the search is shown to find them, and after the
shred's answer it finds none. The search looks only for this test's random key bytes, so other sessions'
writes to the same server cannot disturb it.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from keyservice.compaction import AofRewriter, check_no_snapshots
from keyservice.residue import data_dir, search_files
from keyservice.service import KeyService
from keyservice.wire.errors import KeyUnwrapError
from keyservice.wrapping import MasterKey
from shell.processes import free_port
from tests.keyservice.app_calls import ENCRYPT, send
from tests.keyservice.helpers import Credentials

pytestmark = pytest.mark.integration

# What the auditor did: every 69-byte run that looks like a wrapped key (format byte + the master
# key's id), tried under the master key for every (user, version) the attacker guesses.
_WRAPPED = re.compile(rb"\x01(.{8})(.{60})", re.DOTALL)


def recover(directory: Path, master: MasterKey, refs: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """The "30-line recovery" from the issue: unwrap whatever wrapped keys the key store's files hold."""
    opened: set[tuple[str, int]] = set()
    for path in directory.rglob("*"):
        if not path.is_file() or path.name == "redis.log":
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        start = 0
        while (at := data.find(b"\x01" + master.key_id, start)) >= 0:
            start = at + 1
            candidate = data[at : at + 69]
            for user_id, version in refs:
                try:
                    master.unwrap(user_id, version, candidate)
                except KeyUnwrapError:
                    continue
                opened.add((user_id, version))
    return opened


async def _wrapped(redis: Redis, service: KeyService, user: str) -> list[bytes]:
    fields: dict[bytes, bytes] = await redis.hgetall(service.store.user_key(user))  # type: ignore[assignment]
    return [value for name, value in fields.items() if name.startswith(b"v:")]


async def _stream_bytes(redis: Redis, key: str) -> bytes:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(key)  # type: ignore[assignment]
    return b"".join(value for _, fields in entries for value in fields.values())


async def test_after_the_shred_answer_no_file_of_the_key_store_holds_the_users_wrapped_keys(
    http: httpx.AsyncClient, creds: Credentials, redis: Redis, service: KeyService
) -> None:
    users = {"user_ids": ["disk-victim", "disk-keeper"]}
    assert (await send(http, creds, "encryptor", "POST", ENCRYPT, users)).status_code == 200
    await send(http, creds, "admin", "POST", "/v1/users/disk-victim/rotate")
    victim = await _wrapped(redis, service, "disk-victim")
    keeper = await _wrapped(redis, service, "disk-keeper")
    assert len(victim) == 2
    assert len(keeper) == 1
    directory = await data_dir(redis)
    master = service.store.master
    refs = [("disk-victim", 1), ("disk-victim", 2), ("disk-keeper", 1)]

    before = search_files(directory, [*victim, *keeper])
    assert {index for _, index in before.found} == {0, 1, 2}, "the search must find the keys while they exist"
    assert recover(directory, master, refs) == set(refs), "and the issue's recovery works on them"

    answer = await send(http, creds, "admin", "DELETE", "/v1/users/disk-victim")
    assert answer.status_code == 200
    after = search_files(directory, [*victim, *keeper])
    assert after.files >= 1
    assert {index for _, index in after.found} == {2}, f"destroyed keys left on disk: {after.found}"
    assert recover(directory, master, refs) == {("disk-keeper", 1)}
    assert not (directory / "dump.rdb").exists()


async def test_the_audit_log_and_the_ledger_never_hold_a_wrapped_key(
    http: httpx.AsyncClient, creds: Credentials, redis: Redis, service: KeyService
) -> None:
    await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["audited"]})
    wrapped = await _wrapped(redis, service, "audited")
    granted = await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": ["audited"]})
    plain = base64.b64decode(granted.json()["keys"][0]["key"])
    await send(http, creds, "admin", "DELETE", "/v1/users/audited")
    prefix = service.store.prefix
    audit = await _stream_bytes(redis, f"{prefix}audit")
    ledger: bytes = b"".join(await redis.lrange(f"{prefix}ledger", 0, -1))  # type: ignore[arg-type]
    notices = await _stream_bytes(redis, f"{prefix}shreds")
    for text in (audit, ledger, notices):
        assert b"audited" in text
    for secret in (*wrapped, plain):
        for text in (audit, ledger, notices):
            assert secret not in text
            assert base64.b64encode(secret) not in text


async def test_a_thousand_concurrent_shreds_share_a_few_rewrites(
    http: httpx.AsyncClient, creds: Credentials, service: KeyService
) -> None:
    users = [f"mass-{i}" for i in range(1000)]
    assert (await send(http, creds, "encryptor", "POST", ENCRYPT, {"user_ids": users})).status_code == 200
    rewriter = service.erasure.gate._rewriter
    assert isinstance(rewriter, AofRewriter)
    before = rewriter.rewrites
    started = time.perf_counter()
    busy: list[int] = []

    async def shred(user: str) -> httpx.Response:
        # As the client does: a 503 (the key store slow to answer on a loaded machine) is asked again; a
        # shred is idempotent.
        for _ in range(5):
            answer = await send(http, creds, "admin", "DELETE", f"/v1/users/{user}")
            if answer.status_code != 503:
                return answer
            busy.append(1)
            await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
        return answer

    answers = await asyncio.gather(*(shred(u) for u in users))
    elapsed = time.perf_counter() - started
    assert [a.status_code for a in answers] == [200] * len(users), {
        a.text for a in answers if a.status_code != 200
    }
    used = rewriter.rewrites - before
    # A handful when the machine is quiet (3-6 here); the bound leaves room for a busy one, where shreds
    # trickle in over more rewrite rounds. Without the gate it would be 1000.
    assert 1 <= used <= 100, f"{used} rewrites for 1000 shreds"
    print(f"1000 shreds in {elapsed:.2f} s with {used} AOF rewrites, {len(busy)} answers 503 asked again")


async def test_rewrite_waits_out_a_rewrite_someone_else_started(redis: Redis) -> None:
    """A rewrite already running may have forked before our deletion: ours is a later one."""
    rewrites = int((await redis.info("persistence"))["aof_rewrites"])
    started_one = True
    try:
        await redis.bgrewriteaof()
    except ResponseError:
        started_one = False  # another session's rewrite is running: just as good for this test
    rewriter = AofRewriter(redis)
    await rewriter.rewrite()
    info = await redis.info("persistence")
    assert rewriter.rewrites >= 1, "it asked for a rewrite of its own"
    assert int(info["aof_rewrites"]) >= rewrites + (2 if started_one else 1)
    assert not int(info["aof_rewrite_in_progress"])
    assert info["aof_last_bgrewrite_status"] == "ok"


@pytest.fixture
async def snapshotting_redis(tmp_path: Path) -> AsyncIterator[tuple[Redis, Path]]:
    """A Redis of this test's own that takes RDB snapshots, with a dump.rdb on disk (as Debian's default)."""
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is needed (pulseseal services up installs it)"
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 - starting a server takes no time worth awaiting
        [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--appendonly", "yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = Redis(port=port)
    try:
        for _ in range(100):
            try:
                await client.ping()
                break
            except Exception:  # noqa: BLE001 - not up yet
                await asyncio.sleep(0.05)
        await client.set("k", "v")
        await client.save()
        assert (tmp_path / "dump.rdb").exists()
        yield client, tmp_path
    finally:
        await client.aclose()
        process.terminate()
        process.wait(10)


async def _save(client: Redis) -> str:
    reply: dict[Any, Any] = await client.config_get("save")
    value = reply.get("save", reply.get(b"save"))
    return value.decode() if isinstance(value, bytes) else str(value)


async def test_snapshots_are_switched_off_and_an_old_one_removed_at_start(
    snapshotting_redis: tuple[Redis, Path],
) -> None:
    client, directory = snapshotting_redis
    assert await _save(client) != ""
    await check_no_snapshots(client, "test")
    assert await _save(client) == ""
    assert not (directory / "dump.rdb").exists()
