"""The demo, step by step: servers, pipeline, traffic, summary, one sealed document, replay, shred.

Every step prints what it does and the command a user would type for it, so the demo doubles as a
tour. Components the demo starts are stopped at the end; the servers keep running. The sealed documents
go to a database of the demo's own, emptied at the start of every run (`_use_demo_database`).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient, MongoClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pulseseal import mongo
from pulseseal.settings import Settings
from schemas import canonical_json, validate_event
from shell import synthetic
from shell.cli import services as services_cmd
from shell.cli.errors import CliError
from shell.demo import erasure, show
from shell.demo.traffic import read_secret, requests_for, send
from shell.processes import Child, StartFailed, run, spawn, spawn_encryptor, stop_all

READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DemoOptions:
    """Sizes and knobs of a demo run (all are `pulseseal demo` flags)."""

    users: int = 300
    events_per_user: int = 100
    per_request: int = 100
    concurrency: int = 16
    seed: int | None = None


Children = list[Child]


def run_demo(settings: Settings, options: DemoOptions, console: Console) -> None:
    """Run the whole demo.

    Raises:
        CliError: a step failed; the message says which and where its log is.
    """
    started = time.monotonic()
    run_id = secrets.token_hex(3)
    log_dir = settings.home_dir / "logs"
    show.step(console, 1, "Local servers", "pulseseal services up")
    services_cmd.up(None)

    show.step(console, 2, "Pipeline: key service, encryptor, gateway", "pulseseal run")
    settings = _use_demo_database(settings, console)
    children: Children = []
    try:
        _start_pipeline(settings, children, log_dir, console)
        asyncio.run(_main(settings, options, run_id, console))
    finally:
        stop_all(children)
    console.print(
        f"\n[bold green]Demo finished in {time.monotonic() - started:.0f} s.[/] The servers keep running."
    )
    console.print("Stop them with [bold]pulseseal services down[/] (or [bold]make services-down[/]).")


def _use_demo_database(settings: Settings, console: Console) -> Settings:
    """Point the demo and every process it starts at `<PULSESEAL_MONGO_DB>_demo`, emptied first.

    Otherwise every run would add its events to the main database for good, and the local FerretDB
    (SQLite) answers queries by user — the demo's progress counts, its replays — by scanning the whole
    collection: each run would be slower than the last (43 s instead of 22 s at 100 000 documents). Not
    when a gateway is already running: the demo then joins that pipeline, whose encryptor writes to the
    pipeline's own database, so the demo must look there.
    """
    if _healthy(settings.gateway_url.rstrip("/") + "/healthz"):
        return settings
    database = f"{settings.mongo_db}_demo"
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongo_url, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(database)
    finally:
        client.close()
    os.environ["PULSESEAL_MONGO_DB"] = database  # the encryptor and the replays inherit it
    show.line(console, f"sealed documents: database {database} (emptied at the start of every demo)")
    show.line(console, f"to replay them yourself afterwards: export PULSESEAL_MONGO_DB={database}")
    return settings.model_copy(update={"mongo_db": database})


def _start_pipeline(settings: Settings, children: Children, log_dir: Path, console: Console) -> None:
    # With a list of key-service replicas configured, the demo checks (and would start) the first.
    for name, url in (("keyservice", settings.keyservice_urls[0]), ("gateway", settings.gateway_url)):
        health = url.rstrip("/") + "/healthz"
        if _healthy(health):
            console.print(f"  {name}: already running at {url} — using it")
            continue
        children.append(spawn(name, [name], log=log_dir / f"demo-{name}.log", append=False))
        _ready(children[-1], health)
        console.print(f"  {name}: started at {url}")
    # Always one encryptor of our own: a second one next to a running pipeline only shares the work.
    log = log_dir / "demo-encryptor.log"
    children.append(spawn_encryptor("encryptor", log_dir / "run", log=log, append=False))
    _ready(children[-1], None)
    console.print("  encryptor: started")
    show.line(console, f"logs: {_shown(log_dir)}/demo-<component>.log")


async def _main(settings: Settings, options: DemoOptions, run_id: str, console: Console) -> None:
    rng = random.Random(options.seed)
    users = synthetic.user_ids(options.users, prefix=f"demo-{run_id}")
    events = list(synthetic.events(options.users * options.events_per_user, users, rng))
    secret = read_secret(settings.credential(settings.gateway_jwt_secret_file, "gateway-jwt.secret"))
    client: AsyncMongoClient[dict[str, Any]] = mongo.connect(settings.mongo_url)
    collection = mongo.sealed_events(client, settings.mongo_db)
    try:
        show.step(
            console,
            3,
            f"Wearable traffic: {len(events):,} events of {len(users)} users through the gateway",
            f"POST {settings.gateway_url}/v1/events (user JWTs, {options.per_request} events a request)",
        )
        report = await _send_with_progress(settings, secret, events, users, options, collection, console)
        stored = await _stored_times(collection, users)
        show.summary(console, report, stored, len(events))
        if report.accepted == 0:
            raise CliError("the gateway accepted nothing; see .pulseseal/logs/demo-gateway.log")

        show.step(console, 5, "One sealed document next to the event it came from", "what MongoDB holds")
        sample = events[0]
        document = await collection.find_one({"_id": sample["event_id"]})
        if document is None:
            raise CliError("the sample event was not stored; see .pulseseal/logs/demo-encryptor.log")
        show.sealed_next_to_event(console, sample, document)

        auditee, victim = users[0], users[1]
        show.step(
            console,
            6,
            f"Audit replay of {auditee}",
            f'pulseseal replay --user-id {auditee} --purpose "demo: audit replay"',
        )
        own = sorted(
            (validate_event(e) for e in events if e["user_id"] == auditee), key=lambda e: e.occurred_at
        )
        replayed = _replay(auditee, "demo: audit replay", console)
        expected = [canonical_json(e).decode() for e in own]
        identical = replayed.stdout.splitlines() == expected
        show.replay_result(console, replayed, len(expected), identical)
        if not identical:
            raise CliError("the replay differs from what was sent")

        show.step(console, 7, f"Crypto-shredding {victim}", f"pulseseal keys shred --user-id {victim} --yes")
        disk = await erasure.before_shred(settings, victim)
        shred = _pulseseal("keys", "shred", "--user-id", victim, "--yes")
        show.command_output(console, shred)
        if shred.returncode != 0:
            raise CliError("shredding failed; see the output above")
        after = _replay(victim, "demo: verify erasure", console)
        show.after_shred(console, after, victim)
        if not erasure.after_shred(console, disk):
            raise CliError("a shredded key is still in the key store's files")
    finally:
        await client.close()


async def _send_with_progress(
    settings: Settings,
    secret: bytes,
    events: list[dict[str, Any]],
    users: list[str],
    options: DemoOptions,
    collection: Any,
    console: Console,
) -> Any:
    total = len(events)
    with Progress(
        TextColumn("  {task.description:<9}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        accepted = progress.add_task("accepted", total=total)
        sealed = progress.add_task("sealed", total=total)
        sending = asyncio.create_task(
            send(
                settings.gateway_url,
                secret,
                requests_for(events, options.per_request),
                concurrency=options.concurrency,
                on_accepted=lambda n: progress.advance(accepted, n),
            )
        )
        deadline = None
        while True:
            count = await collection.count_documents({"user_id": {"$in": users}})
            progress.update(sealed, completed=count)
            if sending.done():
                report = sending.result()
                if count >= report.accepted:
                    return report
                deadline = deadline or time.monotonic() + 120
                if time.monotonic() > deadline:
                    raise CliError(f"only {count} of {report.accepted} accepted events were sealed in 2 min")
            # Twice a second: FerretDB (SQLite) answers each count by scanning, taking time from the inserts.
            await asyncio.sleep(0.5)


async def _stored_times(collection: Any, users: list[str]) -> dict[str, float]:
    stored = {}
    async for doc in collection.find({"user_id": {"$in": users}}, {"sealed_at": 1}):
        stored[doc["_id"]] = doc["sealed_at"].timestamp()
    return stored


def _replay(user: str, purpose: str, console: Console) -> subprocess.CompletedProcess[str]:
    return _pulseseal("replay", "--user-id", user, "--purpose", purpose)


def _pulseseal(*args: str) -> subprocess.CompletedProcess[str]:
    return run(args)


def _healthy(url: str) -> bool:
    with suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    return False


def _ready(child: Child, health: str | None) -> None:
    """Wait for `health` to answer 200, or for an encryptor's `/readyz` (None)."""
    try:
        if health is None:
            child.wait_encryptor_ready(READY_TIMEOUT_S)
        else:
            child.wait_ready(health, READY_TIMEOUT_S)
    except StartFailed as exc:
        raise CliError(str(exc)) from None


def _shown(path: Path) -> str:
    # Relative to the working directory when below it: the demo's lines stay within 80 columns.
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
