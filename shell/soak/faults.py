"""The soak's fault schedule: planned from a seed (same seed, same schedule), injected one at a time.

After each fault the pipeline's recovery is measured from the moment the fault ended (the server back
up, the process restarted, the paused server resumed):
- `stored_again_s`: until the encryptors store events again (their sealed + duplicate counters grow);
- `caught_up_s`: until a probe event, submitted through the gateway right at the fault's end (retried
  until accepted), is in MongoDB — so everything queued before it has been worked through as well;
- `disruption_s`: the fault's own length plus `caught_up_s`.
The next fault waits for the previous recovery, so each measurement is about one fault.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from shell.soak import cluster_faults, replica_faults
from shell.soak.pipeline import Pipeline
from shell.soak.servers import Servers

KINDS = (
    "encryptor_kill",
    "rabbitmq_restart",
    "mongo_pause",
    "mongo_restart",
    "keyservice_restart",
    "redis_restart",
    "redis_kill",
)
# Rough seconds each fault and its recovery take here, to space the schedule.
COST_S = {
    "encryptor_kill": 6.0,
    "rabbitmq_restart": 18.0,
    "mongo_pause": 6.0,
    "mongo_restart": 7.0,
    "keyservice_restart": 5.0,
    "redis_restart": 5.0,
    "redis_kill": 5.0,
    replica_faults.KIND: replica_faults.COST_S,
    "rabbitmq_leader_kill": 8.0,  # cluster only (shell/soak/cluster_faults.py); its restart comes after
}
RECOVERY_TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True)
class PlannedFault:
    """One fault of the schedule: when (seconds after traffic started), what, and its parameters."""

    at_s: float
    kind: str
    pause_s: float = 0.0
    target: int = 0

    def describe(self) -> str:
        """One line for the printed schedule."""
        if self.kind == "mongo_pause":
            return f"{self.kind} (SIGSTOP for {self.pause_s:.1f} s, then SIGCONT)"
        if self.kind == "encryptor_kill":
            return f"{self.kind} (SIGKILL encryptor {self.target}, then start a new one)"
        if self.kind == cluster_faults.LEADER_KILL:
            return (
                f"{self.kind} (SIGKILL the RabbitMQ node leading pulseseal.seal; restart it once recovered)"
            )
        if self.kind == "redis_kill":
            return f"{self.kind} (SIGKILL the key-store Redis, then start it on its AOF)"
        if self.kind == replica_faults.KIND:
            return replica_faults.DESCRIPTION
        return self.kind


def plan(
    seed: int, duration_s: float, *, encryptors: int, kinds: tuple[str, ...] = KINDS
) -> list[PlannedFault]:
    """A repeatable schedule: rounds of every kind in a seeded order, spread over `duration_s`.

    Every kind happens at least once even when the duration is short (the run then lasts longer).
    """
    rng = random.Random(seed)
    warmup = min(15.0, max(5.0, duration_s * 0.05))
    available = max(0.0, duration_s - warmup - 10.0)
    round_cost = sum(COST_S[k] for k in kinds) + (5.0 if "mongo_pause" in kinds else 0.0)
    rounds = max(1, int(available // (round_cost + 3.0 * len(kinds))))
    sequence = [k for _ in range(rounds) for k in rng.sample(kinds, len(kinds))]
    gap = max(2.0, (available - rounds * round_cost) / len(sequence))
    faults: list[PlannedFault] = []
    at = warmup
    for kind in sequence:
        if at > duration_s - 10.0 and {f.kind for f in faults} >= set(kinds):
            break  # the jitter ran past the end: what is left waits for a longer run
        pause = round(rng.uniform(2.0, 8.0), 1) if kind == "mongo_pause" else 0.0
        target = rng.randrange(encryptors) if kind == "encryptor_kill" else 0
        faults.append(PlannedFault(round(at, 1), kind, pause, target))
        at += COST_S[kind] + pause + rng.uniform(0.5, 1.5) * gap
    return faults


@dataclass(slots=True)
class FaultResult:
    """What happened: when the fault ran (seconds after traffic started) and how long recovery took."""

    fault: PlannedFault
    started_s: float
    ended_s: float
    stored_again_s: float | None = None
    caught_up_s: float | None = None
    error: str | None = None

    @property
    def disruption_s(self) -> float | None:
        """From the fault's start until caught up: the whole time the pipeline was behind."""
        return None if self.caught_up_s is None else self.ended_s - self.started_s + self.caught_up_s


class FaultRunner:
    """Injects planned faults into the soak's servers and components and measures each recovery.

    Args:
        servers: The soak's servers.
        pipeline: The soak's components.
        probe: Submits a probe event through the gateway (retrying until accepted); returns its id.
        stored: Whether an event id is in MongoDB (one cheap equality lookup).
        progress: Events stored or found stored by the live encryptors so far (from their metrics).
        started: The monotonic time traffic started.
        say: Where progress lines go.
    """

    def __init__(
        self,
        servers: Servers,
        pipeline: Pipeline,
        *,
        probe: Callable[[], Coroutine[Any, Any, str]],
        stored: Callable[[str], Awaitable[bool]],
        progress: Callable[[], Awaitable[float]],
        started: float,
        say: Callable[[str], None],
    ) -> None:
        self._servers = servers
        self._pipeline = pipeline
        self._probe = probe
        self._stored = stored
        self._progress = progress
        self._started = started
        self._say = say
        self._replica_kills = 0
        self._after: Callable[[], Awaitable[None]] | None = None  # what a fault leaves to do once recovered

    def _now(self) -> float:
        return time.monotonic() - self._started

    async def run(self, schedule: list[PlannedFault]) -> list[FaultResult]:
        """Inject every fault at its time (or as soon as the previous recovery ended)."""
        results = []
        for fault in schedule:
            await asyncio.sleep(max(0.0, fault.at_s - self._now()))
            started = self._now()
            self._say(f"  +{started:6.1f} s  fault: {fault.describe()}")
            try:
                await self._inject(fault)
            except Exception as exc:  # noqa: BLE001 - a failed injection is reported, not fatal to the report
                results.append(FaultResult(fault, started, self._now(), error=f"injection failed: {exc}"))
                self._say(f"           injection failed: {exc}")
                continue
            result = FaultResult(fault, started, self._now())
            await self._recover(result)
            if self._after is not None:
                after, self._after = self._after, None
                try:
                    await after()
                except Exception as exc:  # noqa: BLE001 - reported with the fault
                    result.error = f"after recovery: {exc}"
            results.append(result)
            self._say(
                f"  +{self._now():6.1f} s  recovered: stored again after {_fmt(result.stored_again_s)}, "
                f"caught up after {_fmt(result.caught_up_s)}" + (f" — {result.error}" if result.error else "")
            )
        return results

    async def _inject(self, fault: PlannedFault) -> None:
        servers, pipeline = self._servers, self._pipeline
        if fault.kind == "encryptor_kill":
            pipeline.kill_encryptor(fault.target)
            await asyncio.sleep(1.0)
            await pipeline.start_encryptor(fault.target)
        elif fault.kind in ("rabbitmq_restart", "mongo_restart", "redis_restart"):
            name = fault.kind.split("_")[0]
            await asyncio.to_thread(servers.services, "down", name)
            await asyncio.to_thread(servers.services, "up", name)
        elif fault.kind == "mongo_pause":
            servers.signal("mongo", signal.SIGSTOP)
            try:
                await asyncio.sleep(fault.pause_s)
            finally:
                servers.signal("mongo", signal.SIGCONT)
        elif fault.kind == "keyservice_restart":
            await pipeline.restart_keyservice()
        elif fault.kind == replica_faults.KIND:
            await replica_faults.inject(pipeline, self._replica_kills)
            self._replica_kills += 1
        elif fault.kind == cluster_faults.LEADER_KILL:
            self._after = await cluster_faults.kill_seal_leader(servers, self._say)
        elif fault.kind == "redis_kill":
            servers.signal("redis", signal.SIGKILL)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(servers.services, "up", "redis")
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    async def _recover(self, result: FaultResult) -> None:
        ended = time.monotonic()
        baseline = await self._progress()
        probe = asyncio.create_task(self._probe())
        deadline = ended + RECOVERY_TIMEOUT_S
        probe_id: str | None = None
        while time.monotonic() < deadline:
            if result.stored_again_s is None and await self._progress() > baseline:
                result.stored_again_s = time.monotonic() - ended
            if probe_id is None and probe.done():
                probe_id = probe.result()
            if probe_id is not None and await self._stored(probe_id):
                result.caught_up_s = time.monotonic() - ended
                if result.stored_again_s is None:
                    result.stored_again_s = result.caught_up_s
                return
            await asyncio.sleep(0.25 if result.stored_again_s is None else 0.5)
        probe.cancel()
        result.error = f"not recovered within {RECOVERY_TIMEOUT_S:.0f} s"


def _fmt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.1f} s"
