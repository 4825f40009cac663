"""The two pipelines PulseSeal is compared with, as real FastStream subscriber processes.

Both take one event per message (`application/json`) from `pulseseal.seal`, with FastStream's default
ack policy (ack when the handler returns, reject when it raises), the encryptor's prefetch, and the
event validated by FastStream into `HealthEvent`:

- **naive**: per event, one key-service request through our client with the cache bypassed
  (`use_cache=False`), our `seal`, and `insert_one` into `sealed_events` (journaled) — PulseSeal without
  batching or caching;
- **peer**: what users would build today with MongoDB's own tool: per event, `ClientEncryption.encrypt`
  (explicit client-side field-level encryption, `AEAD_AES_256_CBC_HMAC_SHA_512-Random`) of the whole event
  as a JSON string under the user's data key (by key alt name), local KMS provider, key vault in the same
  MongoDB-compatible server, and `insert_one` (journaled). The data keys are created and read into
  libmongocrypt's cache (never expiring) before the subscriber starts: on FerretDB every key vault read
  scans the vault (docs/benchmarks.md, scenario 1), which would otherwise be most of what is measured.

`python -m bench.baselines naive|peer` runs one with the `PULSESEAL_*` settings of its environment
(`BENCH_PEER_USERS`: how many users, `user-00000` …, the peer creates keys for); it prints `ready` once
subscribed. `run_baseline` pre-loads a queue, starts one and times its drain.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bson.codec_options import CodecOptions
from faststream import FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from pymongo.asynchronous.encryption import AsyncClientEncryption

from bench.competitors import RANDOM
from bench.encryptors import encryptor_env
from bench.keyservice import RunningKeyService
from bench.scratch import Scratch
from bench.traffic import Workload, publish
from keyservice.client import KeyServiceClient
from pulseseal import mongo
from pulseseal.envelope import seal
from pulseseal.settings import load_settings
from pulseseal.topology import SEAL_QUEUE
from schemas import HealthEvent, canonical_json

Kind = Literal["naive", "peer"]
READY = "ready"


async def _serve(kind: Kind) -> None:
    settings = load_settings()
    client: Any = mongo.connect(settings.mongo_url)
    collection = mongo.sealed_events(client, settings.mongo_db)
    broker = RabbitBroker(settings.amqp_url, logger=None)
    app = FastStream(broker, logger=None, after_startup=[lambda: print(READY, flush=True)])
    queue = RabbitQueue(SEAL_QUEUE, declare=False)
    channel = Channel(prefetch_count=settings.prefetch)
    try:
        if kind == "naive":
            keys = KeyServiceClient.from_settings(settings, "encryptor")

            @broker.subscriber(queue, channel=channel)
            async def naive(event: HealthEvent) -> None:
                grant = await keys.encrypt_keys([event.user_id], use_cache=False)
                await collection.insert_one(seal(event, grant.keys[event.user_id]))

            try:
                await app.run()
            finally:
                await keys.aclose()
        else:
            encryption: AsyncClientEncryption[dict[str, Any]] = AsyncClientEncryption(
                {"local": {"key": os.urandom(96)}},
                f"{settings.mongo_db}.datakeys",
                client,
                CodecOptions(),
                key_expiration_ms=0,  # cached data keys never expire during the run
            )
            for n in range(int(os.environ["BENCH_PEER_USERS"])):
                user = f"user-{n:05d}"
                await encryption.create_data_key("local", key_alt_names=[user])
                await encryption.encrypt("warm", RANDOM, key_alt_name=user)

            @broker.subscriber(queue, channel=channel)
            async def peer(event: HealthEvent) -> None:
                ciphertext = await encryption.encrypt(
                    canonical_json(event).decode(), RANDOM, key_alt_name=event.user_id
                )
                document = {
                    "_id": event.event_id,
                    "user_id": event.user_id,
                    "occurred_at": event.occurred_at,
                    "event": ciphertext,
                }
                await collection.insert_one(document)

            try:
                await app.run()
            finally:
                await encryption.close()
    finally:
        await client.close()


@dataclass(frozen=True, slots=True)
class BaselineRun:
    """One drain of a baseline pipeline."""

    events: int
    seconds: float
    """From the first poll that saw a stored document to the first that saw all of them."""
    first: int
    """Documents already stored at that first poll (not counted in the rate)."""
    setup_seconds: float
    """Process start, and for the peer its key creation and warm-up, before `ready`."""

    @property
    def events_per_s(self) -> float:
        """Events stored per second."""
        return (self.events - self.first) / self.seconds if self.seconds > 0 else 0.0


async def run_baseline(
    kind: Kind,
    scratch: Scratch,
    service: RunningKeyService,
    workload: Workload,
    events: int,
    *,
    peer_users: int = 0,
    timeout_s: float = 600.0,
) -> BaselineRun:
    """Pre-load `events` single-event messages, run the baseline until all are stored, time it.

    Raises:
        RuntimeError: the process exited, or did not finish within `timeout_s`.
    """
    await scratch.reset_queues()
    database = scratch.new_database()
    # Unsealed: the pipelines compared with have no transport sealing (see bench.traffic.publish).
    sent = await publish(scratch.amqp_url, workload.singles(events), sealer=None)
    with tempfile.TemporaryDirectory(prefix="pulseseal-bench-base-") as home:
        env = encryptor_env(scratch, database, service, Path(home)) | {"BENCH_PEER_USERS": str(peer_users)}
        log_path = Path(home) / f"{kind}.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.baselines", kind, env=env, stdout=log, stderr=log
            )
        try:
            started = time.perf_counter()
            await _wait_ready(process, log_path, timeout_s)
            setup = time.perf_counter() - started
            seconds, first = await _watch(scratch, database, sent, process, log_path, timeout_s)
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
                    await process.wait()
    await scratch.drop_database(database)
    return BaselineRun(sent, seconds, first, setup)


def _logged(log_path: Path) -> str:
    # A small log read in passing: not worth a thread.
    return log_path.read_text(errors="replace")


def _last_line(log_path: Path) -> str:
    lines = _logged(log_path).strip().splitlines()
    return lines[-1][:300] if lines else "no output"


async def _wait_ready(process: asyncio.subprocess.Process, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while READY not in _logged(log_path).split():
        if process.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"baseline did not start: {_last_line(log_path)}")
        await asyncio.sleep(0.05)


async def _watch(
    scratch: Scratch,
    database: str,
    expected: int,
    process: asyncio.subprocess.Process,
    log_path: Path,
    timeout_s: float,
) -> tuple[float, int]:
    first: float | None = None
    first_stored = 0
    deadline = time.perf_counter() + timeout_s
    while True:
        now = time.perf_counter()
        stored = await scratch.stored(database)
        if stored and first is None:
            first, first_stored = now, stored
        if first is not None and stored >= expected:
            return now - first, first_stored
        if process.returncode is not None:
            raise RuntimeError(f"baseline exited during the drain: {_last_line(log_path)}")
        if now > deadline:
            raise RuntimeError(f"baseline did not finish in {timeout_s:.0f} s ({stored}/{expected})")
        await asyncio.sleep(0.1)


if __name__ == "__main__":  # python -m bench.baselines naive|peer
    if len(sys.argv) != 2 or sys.argv[1] not in ("naive", "peer"):
        sys.exit("usage: python -m bench.baselines naive|peer")
    asyncio.run(_serve("naive" if sys.argv[1] == "naive" else "peer"))
