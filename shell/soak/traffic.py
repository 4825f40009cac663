"""Steady traffic for the soak: gateway requests and importer runs, and the ledger of what was accepted.

An event counts as accepted only when a producer said so: a 202 from the gateway, or an importer run
that finished (exit 0 or 1) for a file in which every line but the planted invalid ones is valid — the
importer's contract is that it then published every valid line with broker confirms. Refused requests
and lost connections are retried (the event id makes a repeat harmless) until a deadline; what never got
accepted is remembered as attempted, because a broker may have taken part of a request that was
answered 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from schemas import canonical_json, validate_event
from shell import synthetic
from shell.demo.traffic import user_token
from shell.processes import command
from shell.soak.canaries import CanarySet, canary_events, invalid_canary_event

GIVE_UP_S = 300.0
EVENTS_PER_REQUEST = 10
TICK_S = 0.2


def fingerprint(event: dict[str, Any] | bytes) -> bytes:
    """The first 16 bytes of SHA-256 over an event's canonical JSON (raw canonical bytes taken as is)."""
    raw = event if isinstance(event, bytes) else canonical_json(validate_event(event))
    return hashlib.sha256(raw).digest()[:16]


@dataclass
class Ledger:
    """Every event id a producer accepted (with its fingerprint) and every one ever attempted."""

    accepted: dict[str, bytes] = field(default_factory=dict)
    attempted: set[str] = field(default_factory=set)
    accepted_at: list[float] = field(default_factory=list)
    by_gateway: int = 0
    by_importer: int = 0
    resubmitted: int = 0  # events sent again after a 503 or a lost connection (importer resumes aside)
    rejected_by_gateway: int = 0
    rejected_by_importer: int = 0
    unexpected: list[str] = field(default_factory=list)

    def attempt(self, events: list[dict[str, Any]]) -> None:
        """Note events about to be sent."""
        self.attempted.update(event["event_id"] for event in events)

    def accept(self, events: list[dict[str, Any]], via: str) -> None:
        """Note events a producer accepted."""
        now = time.monotonic()
        for event in events:
            self.accepted[event["event_id"]] = fingerprint(event)
            self.accepted_at.append(now)
        if via == "gateway":
            self.by_gateway += len(events)
        else:
            self.by_importer += len(events)


class Users:
    """The soak's users: a pool that grows all the time, so new keys are created throughout the run."""

    def __init__(self, prefix: str, rng: random.Random, start: int = 100) -> None:
        self._prefix = prefix
        self._rng = rng
        self.ids = [f"{prefix}-{i:05d}" for i in range(start)]

    def grow(self, n: int = 1) -> list[str]:
        """Add `n` brand-new users (their first event creates their key) and return them."""
        new = [f"{self._prefix}-{len(self.ids) + i:05d}" for i in range(n)]
        self.ids += new
        return new

    def pick(self) -> str:
        """A user, new users as likely as old ones."""
        return self._rng.choice(self.ids)


class GatewayDriver:
    """POSTs NDJSON requests of one user's events at `rate` events a second, retrying refusals."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        ledger: Ledger,
        users: Users,
        rng: random.Random,
        *,
        rate: float,
        canaries: CanarySet,
        concurrency: int = 48,
    ) -> None:
        self._url = url
        self._secret = secret
        self._ledger = ledger
        self._users = users
        self._rng = rng
        self._rate = rate
        self._canaries = canaries
        self._slots = asyncio.Semaphore(concurrency)
        self._tokens: dict[str, str] = {}
        self._tasks: set[asyncio.Task[float]] = set()
        self.statuses: dict[str, int] = {}
        self.error_bodies: list[bytes] = []

    def _token(self, user: str) -> str:
        token = self._tokens.get(user)
        if token is None:
            token = self._tokens[user] = user_token(self._secret, user)
        return token

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        """Send until `stop` is set, then wait for the requests in flight (each retries until accepted)."""
        owed = 0.0
        next_tick = time.monotonic()
        next_canary = next_tick + 2.0
        while not stop.is_set():
            owed += self._rate * TICK_S
            if self._rng.random() < TICK_S:  # about one new user a second
                self._users.grow()
            while owed >= 1:
                n = min(EVENTS_PER_REQUEST, int(owed))
                owed -= n
                user = self._users.pick()
                events = list(synthetic.events(n, [user], self._rng))
                await self._submit(client, user, events)
            if time.monotonic() >= next_canary:
                next_canary += 20.0
                await self._plant(client)
            next_tick += TICK_S
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def _plant(self, client: httpx.AsyncClient) -> None:
        user = self._users.grow()[0]
        now = datetime.now(UTC)
        await self._submit(client, user, canary_events([user], self._rng, self._canaries, now))
        bad = [invalid_canary_event(user, self._rng, self._canaries, now)]
        await self._submit(client, user, bad, expect_refusal=True)

    async def submit_and_wait(self, client: httpx.AsyncClient, events: list[dict[str, Any]]) -> float:
        """Send one request now and return the monotonic time its 202 came (for recovery probes)."""
        await self._slots.acquire()
        return await self._send(client, events[0]["user_id"], events, expect_refusal=False)

    async def _submit(
        self,
        client: httpx.AsyncClient,
        user: str,
        events: list[dict[str, Any]],
        *,
        expect_refusal: bool = False,
    ) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._send(client, user, events, expect_refusal=expect_refusal))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, client: httpx.AsyncClient, user: str, events: list[dict[str, Any]], *, expect_refusal: bool
    ) -> float:
        try:
            body = b"".join(
                json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for e in events
            )
            headers = {"Authorization": f"Bearer {self._token(user)}", "Content-Type": "application/x-ndjson"}
            if not expect_refusal:
                self._ledger.attempt(events)
            deadline = time.monotonic() + GIVE_UP_S
            delay = 0.25
            while time.monotonic() < deadline:
                try:
                    response = await client.post(f"{self._url}/v1/events", content=body, headers=headers)
                except httpx.HTTPError:
                    status = "connection error"
                else:
                    status = str(response.status_code)
                    if response.status_code != 503:
                        self.statuses[status] = self.statuses.get(status, 0) + 1
                        return self._answered(response, events, expect_refusal)
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if not expect_refusal:
                    self._ledger.resubmitted += len(events)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
            self._ledger.unexpected.append(f"a gateway request was not accepted within {GIVE_UP_S:.0f} s")
            return time.monotonic()
        finally:
            self._slots.release()

    def _answered(
        self, response: httpx.Response, events: list[dict[str, Any]], expect_refusal: bool
    ) -> float:
        if expect_refusal:
            self.error_bodies.append(response.content)
            if response.status_code == 422:
                self._ledger.rejected_by_gateway += len(events)
            else:
                self._ledger.unexpected.append(
                    f"an invalid request was answered {response.status_code}, not 422"
                )
        elif response.status_code == 202:
            self._ledger.accept(events, "gateway")
        else:
            self.error_bodies.append(response.content)
            self._ledger.unexpected.append(f"a valid request was answered {response.status_code}")
        return time.monotonic()


class ImporterDriver:
    """Writes an NDJSON file every `interval_s` and imports it with `pulseseal import` (resuming on exit 2)."""

    def __init__(
        self,
        env: dict[str, str],
        work: Path,
        ledger: Ledger,
        users: Users,
        rng: random.Random,
        *,
        rate: float,
        canaries: CanarySet,
        interval_s: float = 10.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self._env = env
        self._work = work
        self._ledger = ledger
        self._users = users
        self._rng = rng
        self._rate = rate
        self._canaries = canaries
        self._interval_s = interval_s
        self._log = log
        self.files = 0
        self.resumes = 0
        self.rejects_files: list[Path] = []
        self.output_log = work / "importer-output.log"

    async def run(self, stop: asyncio.Event) -> None:
        """Import a file every interval until `stop` is set (the file in progress is finished)."""
        next_at = time.monotonic()
        while not stop.is_set():
            await self._import_one()
            next_at += self._interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))

    def _write_file(self) -> tuple[Path, list[dict[str, Any]], int]:
        self.files += 1
        path = self._work / f"import-{self.files:04d}.ndjson"
        now = datetime.now(UTC)
        new_users = self._users.grow(3)
        events = list(
            synthetic.events(max(1, int(self._rate * self._interval_s)), self._users.ids, self._rng)
        )
        events += canary_events(new_users[:1], self._rng, self._canaries, now)
        invalid = [invalid_canary_event(new_users[1], self._rng, self._canaries, now)]
        lines = [json.dumps(e, ensure_ascii=False) for e in events]
        at = self._rng.randrange(len(lines) + 1)
        lines[at:at] = [json.dumps(e, ensure_ascii=False) for e in invalid]
        path.write_text("\n".join(lines) + "\n")
        return path, events, len(invalid)

    async def _import_one(self) -> None:
        path, events, invalid = self._write_file()
        self._ledger.attempt(events)
        args = [str(path)]
        deadline = time.monotonic() + GIVE_UP_S
        while time.monotonic() < deadline:
            code, last_line = await self._run_importer(args)
            if code == 2:  # the broker was lost for too long: the checkpoint says where to resume
                self.resumes += 1
                args = ["--resume", str(path)]
                await asyncio.sleep(1.0)
                continue
            expected = f"imported {len(events)} events, rejected {invalid},"
            if code == 1 and last_line.startswith(expected):
                self._ledger.accept(events, "importer")
                self._ledger.rejected_by_importer += invalid
                self.rejects_files.append(path.with_name(path.name + ".rejected.ndjson"))
            else:
                self._ledger.unexpected.append(f"{path.name}: importer exit {code}, last line {last_line!r}")
            return
        self._ledger.unexpected.append(f"{path.name}: not imported within {GIVE_UP_S:.0f} s")

    async def _run_importer(self, args: list[str]) -> tuple[int, str]:
        with self.output_log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                *command(["import", *args]),
                env=self._env,
                stdout=asyncio.subprocess.PIPE,
                stderr=out,
                stdin=asyncio.subprocess.DEVNULL,
            )
            stdout, _ = await process.communicate()
            out.write(stdout)
        lines = stdout.decode(errors="replace").strip().splitlines()
        return int(process.returncode or 0), lines[-1] if lines else ""
