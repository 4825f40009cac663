"""One soak run from start to end: servers, components, traffic under faults, checks, drill, hunt."""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from pulseseal import mongo
from shell.demo.traffic import read_secret
from shell.soak import cluster_faults, faults, replica_faults, restore_check, verify
from shell.soak.canaries import CanarySet, PlaceCount, invalid_canary_event, scan_paths
from shell.soak.pipeline import Pipeline
from shell.soak.report import SoakReport
from shell.soak.servers import Servers
from shell.soak.traffic import GatewayDriver, ImporterDriver, Ledger, Users

GATEWAY_SHARE = 0.75


@dataclass(frozen=True)
class SoakOptions:
    """What `pulseseal soak` was asked for."""

    duration_s: float = 600.0
    seed: int | None = None
    rate: float = 200.0
    encryptors: int = 2
    keyservice_replicas: int = 1
    home: Path | None = None
    keep: bool = False
    drain_timeout_s: float = 300.0
    rabbitmq_nodes: int = 1  # 3: a RabbitMQ cluster, and the leader-kill fault (shell/soak/cluster_faults.py)


@dataclass
class _Run:
    options: SoakOptions
    seed: int
    work: Path
    servers: Servers
    pipeline: Pipeline
    say: Callable[[str], None]
    ledger: Ledger
    canaries: CanarySet
    rng: random.Random
    importer_rejects: list[Path] = field(default_factory=list)
    importer_output: list[Path] = field(default_factory=list)
    http_errors: list[bytes] = field(default_factory=list)
    dead_bodies: list[bytes] = field(default_factory=list)
    metrics_text: bytes = b""


async def run_soak(options: SoakOptions, base: Path, say: Callable[[str], None] = print) -> SoakReport:
    """Run a whole soak under `base` (a directory of its own is made there) and return its report.

    Raises:
        SoakSetupError: a server or component could not be set up (the report would mean nothing).
    """
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    work = options.home or base / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%S}-{seed}"
    work.mkdir(parents=True, exist_ok=True)
    servers = Servers.allocate(work / "home", work / "logs" / "services.log", options.rabbitmq_nodes)
    pipeline = Pipeline.configure(
        servers.env(),
        work / "logs",
        mongo_db="pulseseal_soak",
        keyservice_replicas=options.keyservice_replicas,
    )
    run = _Run(options, seed, work, servers, pipeline, say, Ledger(), CanarySet(), random.Random(seed))
    report = SoakReport(seed=seed, rate=options.rate, duration_s=options.duration_s)
    say(f"soak: seed {seed}, work directory {work}")
    try:
        say("soak: starting its own RabbitMQ, key-store Redis and FerretDB on spare ports")
        await asyncio.to_thread(servers.services, "up")
        await pipeline.start_keyservice()
        for slot in range(options.encryptors):
            await pipeline.start_encryptor(slot)
        await pipeline.start_gateway()
        mongo_client: AsyncMongoClient[dict[str, Any]] = mongo.connect(servers.mongo_url, timeout_ms=3000)
        try:
            collection = mongo.sealed_events(mongo_client, pipeline.env["PULSESEAL_MONGO_DB"])
            await _traffic_under_faults(run, report, collection)
            await _check(run, report, collection)
        finally:
            await mongo_client.close()
    finally:
        pipeline.stop_all()
        await asyncio.to_thread(servers.stop_all)
    _hunt(run, report)
    report.judge()
    if not options.keep and report.passed:
        # Servers' data, logs, input files (plaintext canaries) and the backup: nothing left to look at.
        shutil.rmtree(work, ignore_errors=True)
    return report


async def _traffic_under_faults(
    run: _Run, report: SoakReport, collection: AsyncCollection[dict[str, Any]]
) -> None:
    options, pipeline = run.options, run.pipeline
    kinds = (
        faults.KINDS
        + replica_faults.kinds(options.keyservice_replicas)
        + (cluster_faults.KINDS if options.rabbitmq_nodes > 1 else ())
    )
    schedule = faults.plan(run.seed, options.duration_s, encryptors=options.encryptors, kinds=kinds)
    run.say(f"soak: fault schedule (seed {run.seed}), seconds after traffic starts:")
    for fault in schedule:
        run.say(f"  +{fault.at_s:6.1f} s  {fault.describe()}")
    secret = read_secret(run.servers.home / "credentials" / "gateway-jwt.secret")
    users = Users(f"soak-{run.seed % 100000}", run.rng)
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as http:
        gateway = GatewayDriver(
            pipeline.gateway_url,
            secret,
            run.ledger,
            users,
            random.Random(run.seed + 1),
            rate=options.rate * GATEWAY_SHARE,
            canaries=run.canaries,
        )
        importer = ImporterDriver(
            pipeline.env,
            run.work,
            run.ledger,
            users,
            random.Random(run.seed + 2),
            rate=options.rate * (1 - GATEWAY_SHARE),
            canaries=run.canaries,
            log=run.say,
        )
        probe_rng = random.Random(run.seed + 3)

        async def probe() -> str:
            event = {
                "event_id": str(uuid.UUID(int=probe_rng.getrandbits(128), version=4)),
                "user_id": "soak-probe",
                "type": "heart_rate",
                "occurred_at": datetime.now(UTC).isoformat(),
                "data": {"bpm": 61},
            }
            await gateway.submit_and_wait(http, [event])
            return str(event["event_id"])

        async def stored(event_id: str) -> bool:
            try:
                return await collection.find_one({"_id": event_id}, {"_id": 1}) is not None
            except Exception:  # noqa: BLE001 - the server may be recovering; ask again
                return False

        async def progress() -> float:
            return _metric_sum(
                await pipeline.encryptor_metrics(http),
                ("pulseseal_events_sealed_total", "pulseseal_events_duplicate_total"),
            )

        started = time.monotonic()
        run.say(
            f"soak: traffic at {options.rate:g} events/s (gateway {GATEWAY_SHARE:.0%}, importer the rest)"
        )
        sending = [asyncio.create_task(gateway.run(http, stop)), asyncio.create_task(importer.run(stop))]
        runner = faults.FaultRunner(
            run.servers, pipeline, probe=probe, stored=stored, progress=progress, started=started, say=run.say
        )
        report.faults = await runner.run(schedule)
        await asyncio.sleep(max(0.0, options.duration_s - (time.monotonic() - started)))
        stop.set()
        run.say(
            f"soak: traffic stopped at +{time.monotonic() - started:.0f} s; waiting for the requests in flight"
        )
        await asyncio.gather(*sending)
        report.traffic_s = time.monotonic() - started
        report.duplicates_seen = int(
            _metric_sum(await pipeline.encryptor_metrics(http), ("pulseseal_events_duplicate_total",))
        )

        async def in_flight() -> float:
            return _metric_sum(await pipeline.encryptor_metrics(http), ("pulseseal_messages_in_flight",))

        run.say("soak: waiting for the pipeline to drain")
        report.drain_s, _ = await verify.wait_drained(
            run.servers.amqp_url, collection, run.ledger, in_flight, timeout_s=run.options.drain_timeout_s
        )
        report.importer_files, report.importer_resumes = importer.files, importer.resumes
        run.importer_rejects = importer.rejects_files
        run.importer_output = [importer.output_log]
        run.http_errors = gateway.error_bodies


async def _check(run: _Run, report: SoakReport, collection: AsyncCollection[dict[str, Any]]) -> None:
    ledger, pipeline = run.ledger, run.pipeline
    run.say("soak: checking every accepted event in MongoDB and opening every document")
    documents = await verify.load_documents(collection)
    ids = {str(d["_id"]) for d in documents}
    report.accepted = len(ledger.accepted)
    report.accepted_gateway, report.accepted_importer = ledger.by_gateway, ledger.by_importer
    report.rejected_gateway, report.rejected_importer = (
        ledger.rejected_by_gateway,
        ledger.rejected_by_importer,
    )
    report.resubmitted = ledger.resubmitted
    report.stored = len(documents)
    report.stored_accepted = len(ids & ledger.accepted.keys())
    report.missing = sorted(ledger.accepted.keys() - ids)
    extra = ids - ledger.accepted.keys()
    report.extra_attempted = len(extra & ledger.attempted)
    report.extra_unknown = sorted(extra - ledger.attempted)
    report.problems += ledger.unexpected
    home = run.servers.home
    openings = await verify.open_all(
        documents, ledger, pipeline.keyservice_url, home, "soak: verify every seal"
    )
    report.opened, report.matched, report.failed_to_open = openings.opened, openings.matched, openings.failed
    await _drill(run, report, documents)
    # The rogue message goes in first, so that the dead letters read below include its own.
    await _dead_letter_canary(run)
    dead = await verify.read_dead_letters(run.servers.amqp_url, ledger)
    report.dead_letters, report.dead_letters_accepted = dead.messages, dead.accepted_ids
    run.dead_bodies = dead.bodies
    run.metrics_text = await _scrape_metrics(run)


async def _drill(run: _Run, report: SoakReport, documents: list[dict[str, Any]]) -> None:
    run.say("soak: key-store drill — backup, shred one user, lose the key store, restore")
    by_user: dict[str, int] = {}
    for doc in documents:
        by_user[str(doc["user_id"])] = by_user.get(str(doc["user_id"]), 0) + 1
    victim = max((u for u in by_user if u != "soak-probe"), key=by_user.__getitem__)
    drill = await restore_check.drill(
        run.pipeline, run.servers.redis_url, run.work / "keystore.backup", victim
    )
    openings = await verify.open_all(
        documents,
        run.ledger,
        run.pipeline.keyservice_url,
        run.servers.home,
        "soak: verify restored key store",
    )
    victim_failed = sum(
        1 for doc in documents if doc["user_id"] == victim and str(doc["_id"]) in openings.failed
    )
    others_failed = len(openings.failed) - victim_failed
    reasons = {r for k, r in openings.keys_missing.items() if k.startswith(f"{victim}:")}
    report.restore = {
        "documents_opened_after_restore": openings.opened,
        "shredded_user_documents": by_user[victim],
        "shredded_user_documents_unopenable": victim_failed,
        "other_documents_failed": others_failed,
        "missing_key_reasons": sorted(reasons),
        "backup": drill.backup_line,
        "restore": drill.restore_line,
    }
    if others_failed or victim_failed != by_user[victim] or reasons != {"shredded"}:
        report.problems.append("the key-store restore drill did not open exactly the unshredded documents")


async def _dead_letter_canary(run: _Run) -> None:
    # A producer that skips validation (but seals, as every producer must): the encryptor dead-letters
    # the event, body and all — sealed again — so neither the dead-letter queue nor RabbitMQ's files
    # may hold its canaries.
    before = await verify.dead_letter_count(run.servers.amqp_url)
    event = invalid_canary_event("soak-rogue", run.rng, run.canaries, datetime.now(UTC))
    await verify.publish_rogue(run.servers.amqp_url, run.pipeline.keyservice_url, [event])
    for _ in range(120):  # polled: the count lives in the broker, there is nothing to wait on here
        if await verify.dead_letter_count(run.servers.amqp_url) > before:
            return
        await asyncio.sleep(0.5)


async def _scrape_metrics(run: _Run) -> bytes:
    texts = []
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        texts += await run.pipeline.encryptor_metrics(http)
        for url in (run.pipeline.gateway_url, *run.pipeline.keyservice_urls):
            try:
                texts.append((await http.get(url + "/metrics")).text)
            except httpx.HTTPError:
                continue
    return "\n".join(texts).encode()


def _hunt(run: _Run, report: SoakReport) -> None:
    run.say("soak: hunting for canaries in everything PulseSeal and its servers wrote")
    canaries = run.canaries
    report.canaries_planted = len(run.canaries.values)
    places: dict[str, PlaceCount] = {}
    for name, paths in run.servers.data_places().items():
        places[name] = scan_paths(paths, canaries)
    places["logs"] = scan_paths(
        [*run.servers.log_places(), *run.pipeline.component_logs(), *run.importer_output], canaries
    )
    for name, blobs in (
        ("metrics", [run.metrics_text]),
        ("http_errors", run.http_errors),
        ("dead_letters", run.dead_bodies),
    ):
        count = PlaceCount(files=len(blobs))
        for blob in blobs:
            count.add_text(blob, canaries)
        places[name] = count
    places["rejected_files"] = scan_paths(run.importer_rejects, canaries)
    places["keystore_backup"] = scan_paths([run.work / "keystore.backup"], canaries)
    places["shred_ledger"] = scan_paths([run.servers.home / "keyservice"], canaries)
    report.canaries = places


def _metric_sum(texts: list[str], names: tuple[str, ...]) -> float:
    total = 0.0
    for text in texts:
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in names:
                total += float(value)
    return total
