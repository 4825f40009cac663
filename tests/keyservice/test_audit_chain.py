"""The audit trail is tamper-evident and bounded: records chained and signed (edited, deleted or inserted
ones are found, by the library and by `pulseseal keys audit --verify`), and the stream capped by moving
its oldest records to the archive file, never by dropping them; on the real key-store Redis."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from keyservice.audit import AuditLog
from keyservice.auditchain import ChainWriter, verify
from keyservice.client import KeyServiceClient
from keyservice.wire.audit import AuditRecord, Outcome
from shell.processes import free_port
from tests.keyservice.helpers import Credentials, pulseseal, server_env, start_keyservice, stop

pytestmark = pytest.mark.integration
KEY = Ed25519PrivateKey.generate()


def record(n: int, user: str = "u") -> AuditRecord:
    return AuditRecord(
        time=f"2026-01-01T00:00:{n % 60:02d}Z",
        caller="encryptor",
        action="encrypt",
        user_ids=[f"{user}-{n}"],
        versions=[1],
        outcome=Outcome.GRANTED,
        request_id=f"r{n}",
    )


def chained(count: int, writer: ChainWriter) -> list[tuple[bytes, bytes | None]]:
    out: list[tuple[bytes, bytes | None]] = []
    for n in range(count):
        payload = json.dumps(record(n).to_json()).encode()
        out.append((payload, writer.link(payload)))
    return out


def test_an_untouched_chain_verifies() -> None:
    result = verify(chained(5, ChainWriter(KEY)), KEY.public_key())
    assert result.ok, result.problems
    assert (result.records, list(result.writers.values())) == (5, [4])


def test_an_edited_record_fails_its_signature() -> None:
    entries = chained(5, ChainWriter(KEY))
    record_bytes, link = entries[2]
    entries[2] = (record_bytes.replace(b"u-2", b"u-9"), link)
    assert any("signature does not verify" in p for p in verify(entries, KEY.public_key()).problems)


def test_a_deleted_record_leaves_a_gap() -> None:
    entries = chained(5, ChainWriter(KEY))
    del entries[2]
    assert verify(entries, KEY.public_key()).problems == [
        "writer " + json.loads(entries[0][1] or b"")["w"] + " record 2: missing (deleted)"
    ]


def test_a_forged_or_inserted_record_is_found() -> None:
    entries = chained(3, ChainWriter(KEY))
    forger = ChainWriter(Ed25519PrivateKey.generate())
    forged = json.dumps(record(7).to_json()).encode()
    entries.insert(1, (forged, forger.link(forged)))
    entries.append((forged, None))  # an unsigned record after signed ones
    problems = verify(entries, KEY.public_key()).problems
    assert any("signature does not verify" in p for p in problems)
    assert any("not signed" in p for p in problems)


def test_records_lost_to_a_failed_write_are_declared_not_taken_for_deleted() -> None:
    writer = ChainWriter(KEY)
    entries = chained(2, writer)
    failed = writer.link(b"never stored")
    writer.lost([failed])
    entries += chained(2, writer)
    assert verify(entries, KEY.public_key()).ok


async def test_the_stream_is_capped_by_archiving_and_nothing_is_lost(
    redis: Redis, prefix: str, tmp_path: Path
) -> None:
    archive = tmp_path / "keyservice" / "audit-archive.ndjson"
    log = AuditLog(redis, prefix, signer=KEY, archive=archive, max_records=100)
    for start in range(0, 1200, 50):
        await log.append_many([record(n) for n in range(start, start + 50)])
    await log.archive_overflow()
    assert await redis.xlen(log.key) == 100
    assert len(archive.read_text().splitlines()) == 1100
    assert archive.stat().st_mode & 0o777 == 0o600
    everything = await log.query(limit=10_000)
    assert [r.request_id for r in everything] == [f"r{n}" for n in range(1200)]
    assert [r.request_id for r in await log.query(user_id="u-7")] == ["r7"]  # found in the archive
    assert verify(await log.entries(), KEY.public_key()).ok


@pytest.fixture
def server_env_(tmp_path: Path, creds: Credentials, redis_url: str, prefix: str) -> dict[str, str]:
    return server_env(tmp_path / "home", creds, redis_url, prefix, free_port())


@pytest.fixture
def running(server_env_: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start_keyservice(server_env_, log_file=tmp_path / "keyservice.log")
    yield process
    stop(process)


async def test_keys_audit_verify_finds_a_deleted_record(
    running: subprocess.Popen[bytes],
    server_env_: dict[str, str],
    creds: Credentials,
    redis: Redis,
    prefix: str,
) -> None:
    async with KeyServiceClient(
        server_env_["PULSESEAL_KEYSERVICE_URL"], "encryptor", creds.keys["encryptor"]
    ) as client:
        for n in range(5):
            await client.current_key(f"audited-{n}")
    good = pulseseal("keys", "audit", "--verify", env=server_env_)
    assert good.returncode == 0, good.stderr
    assert "audit log verified: 5 records" in good.stdout
    stream = f"{prefix}audit"
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(stream)  # type: ignore[assignment]
    await redis.xdel(stream, entries[2][0])
    bad = pulseseal("keys", "audit", "--verify", env=server_env_)
    assert bad.returncode == 3, bad.stdout + bad.stderr
    assert "record 2: missing (deleted)" in bad.stderr
    # An edit: a record rewritten with the same link (an attacker cannot sign a new one).
    _, fields = entries[3]
    edited = fields[b"r"].replace(b"audited-3", b"audited-X")
    await redis.xdel(stream, entries[3][0])
    await redis.xadd(stream, {b"r": edited, b"c": fields[b"c"]})
    worse = pulseseal("keys", "audit", "--verify", env=server_env_)
    assert worse.returncode == 3
    assert "record 3: signature does not verify" in worse.stderr
