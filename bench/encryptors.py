"""Encryptors as real processes, and the drain: how fast they empty a pre-loaded queue.

`pulseseal encryptor --metrics-port 0` (started and awaited through `shell.processes`) runs with the benchmark's virtual host, a database of its
own and the benchmark's key service. Progress is read from each process's Prometheus `/metrics`
(`pulseseal_events_sealed_total` + `pulseseal_events_duplicate_total`: an event counts once it is durably
stored), polled every `POLL_S`; peak RSS is the kernel's high-water mark (`VmHWM` in
`/proc/<pid>/status`), which covers the whole life of the process, so one read at the end is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.cpu import CpuMeter
from bench.keyservice import RunningKeyService
from bench.scratch import Scratch
from bench.traffic import Message, Workload, publish
from keyservice.client.transport_public import TransportSealer
from pulseseal.ferretdb_sql import child_env
from shell.processes import Child, StartFailed, spawn_encryptor

# Every scrape costs the encryptor CPU it would otherwise spend on the drain (a thread and a connection
# per request in prometheus-client's server; 19 % of the encryptor's samples in a py-spy profile at
# 0.05 s): 0.1 s halves that and still times a 25 s drain to 0.4 %. Production scrapes every 15 s.
POLL_S = 0.1
SEALED = "pulseseal_events_sealed_total"
DUPLICATES = "pulseseal_events_duplicate_total"
HITS = "pulseseal_key_cache_hits_total"
MISSES = "pulseseal_key_cache_misses_total"


class EncryptorFailed(RuntimeError):
    """An encryptor process exited or never became ready (the message has its last log line)."""


@dataclass(slots=True)
class EncryptorProcess:
    """One running encryptor (`shell.processes`)."""

    child: Child
    metrics_url: str = ""

    @property
    def pid(self) -> int:
        """The process id (for py-spy and /proc)."""
        return self.child.process.pid

    def exited(self) -> bool:
        """Whether the process has exited."""
        return not self.child.running()

    def last_log_line(self) -> str:
        """The last line it logged (never event data: the encryptor logs ids and counts only)."""
        if self.child.log is None:
            return "no output"
        lines = self.child.log.read_text(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else "no output"

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until its `/readyz` answers 200.

        Raises:
            EncryptorFailed: it exited or did not get ready in time.
        """
        try:
            port = await self.child.wait_encryptor_ready_async(timeout_s)
        except StartFailed:
            raise EncryptorFailed(f"encryptor did not start: {self.last_log_line()}") from None
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"

    async def metrics(self, http: httpx.AsyncClient) -> dict[str, float]:
        """Its counters and gauges by sample name (labels summed)."""
        # Uncompressed: gzip would add CPU on the encryptor's side for a page that never leaves the host.
        text = (await http.get(self.metrics_url, headers={"Accept-Encoding": "identity"})).text
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
        return values

    def memory_mb(self, field_name: str = "VmHWM") -> float:
        """`VmHWM` (peak RSS, default) or `VmRSS` (now), in MB (10^6 bytes)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024 / 1e6
        raise EncryptorFailed(f"no {field_name} for pid {self.pid}")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`."""
        await self.child.stop_async(timeout_s)


def encryptor_env(scratch: Scratch, database: str, service: RunningKeyService, home: Path) -> dict[str, str]:
    """The environment of an encryptor on the benchmark's virtual host, `database` and key service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSESEAL_")}
    return env | {
        "PULSESEAL_HOME": str(home),
        "PULSESEAL_AMQP_URL": scratch.amqp_url,
        "PULSESEAL_MONGO_URL": scratch.mongo_url,
        "PULSESEAL_MONGO_DB": database,
        "PULSESEAL_KEYSERVICE_URL": service.url,
        "PULSESEAL_CALLER_KEY_FILE": str(service.credentials_dir / "encryptor.pem"),
        "PULSESEAL_ENCRYPTOR_SIGNING_KEY": str(service.credentials_dir / "encryptor-signing.pem"),
        **child_env(scratch.postgresql),  # where the encryptor makes the store's GIN indexes
    }


@contextlib.asynccontextmanager
async def encryptors(
    count: int, env: Mapping[str, str], *, log_dir: Path | None = None, manifests: bool = True
) -> AsyncIterator[list[EncryptorProcess]]:
    """Start `count` encryptor processes together and wait until all are ready; stop them at the end.

    `manifests=False` runs `bench.plain_encryptor` instead of `pulseseal encryptor`: the same encryptor
    without batch manifests, the baseline that prices them (a benchmark switch, not a product one).
    """
    with tempfile.TemporaryDirectory(prefix="pulseseal-bench-enc-") as scratch_dir:
        where = log_dir or Path(scratch_dir)
        started: list[EncryptorProcess] = []
        try:
            for index in range(count):
                name = f"encryptor-{index}"
                log_path = where / f"{name}.log"
                if manifests:
                    child = spawn_encryptor(name, where, env=env, log=log_path, append=False)
                else:
                    child = _spawn_plain(name, where, env, log_path)
                started.append(EncryptorProcess(child))
            await asyncio.gather(*(p.wait_ready() for p in started))
            yield started
        finally:
            await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)


def _spawn_plain(name: str, where: Path, env: Mapping[str, str], log_path: Path) -> Child:
    # `spawn_encryptor` with `python -m bench.plain_encryptor` in place of `pulseseal encryptor`.
    port_file = where / f"{name}.port"
    port_file.unlink(missing_ok=True)
    args = [
        sys.executable,
        "-m",
        "bench.plain_encryptor",
        "--metrics-port",
        "0",
        "--port-file",
        str(port_file),
    ]
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            args,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Child(name, process, log_path, port_file, group=True)


@dataclass(slots=True)
class Drain:
    """One drain of a pre-loaded queue."""

    events: int
    processes: int
    seconds: float
    """From the first poll that saw a stored event to the first that saw all of them."""
    peak_rss_mb: list[float]
    cache_hits: float
    cache_misses: float
    duplicates: float
    stored: int
    """Documents in the collection afterwards (`collStats`): must equal `events`."""
    publish_seconds: float
    first: float = 0.0
    """Events already stored at that first poll (the first batch or two), stored before the clock ran."""
    ready_spread_s: float = 0.0
    """From starting the encryptor processes until every one was ready."""
    cores: dict[str, float] = field(default_factory=dict)
    per_process: list[float] = field(default_factory=list)
    """Events each encryptor stored."""
    """Cores used on average from ready to done: `encryptor_<i>`, the servers, `machine` (everything)."""
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since the first stored event, events stored) as polled."""

    @property
    def events_per_s(self) -> float:
        """Events stored per second from the first stored to the last.

        Only the events stored after the first poll count: those seen at it were written before the
        clock started (counting them would overstate a short drain by a batch, 10 % at 20 000 events).
        """
        return (self.events - self.first) / self.seconds if self.seconds > 0 else 0.0

    @property
    def hit_ratio(self) -> float | None:
        """Key-cache hits over lookups, over the whole drain."""
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else None


async def drain(
    scratch: Scratch,
    service: RunningKeyService,
    workload: Workload,
    events: int,
    *,
    processes: int = 1,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = 600.0,
    on_ready: Callable[[list[EncryptorProcess]], Awaitable[object]] | None = None,
    servers: Mapping[str, int] | None = None,
    per_message: int = 1000,
    preload: bool = True,
    manifests: bool = True,
) -> Drain:
    """Pre-load `events` events as `per_message`-event messages, start `processes` encryptors, time the drain.

    With `preload=False` the encryptors are started and ready first and the events published after
    (as fast as the broker confirms: a fraction of a second for 200 messages), so that several
    encryptors share the backlog from the start instead of the first one up taking a whole prefetch
    before the others are running. `on_ready` is called with the processes once they are all ready (a profiler can attach there);
    `servers` names server processes whose CPU use is recorded beside the encryptors'. `manifests=False`
    drains with encryptors that write no batch manifests (the baseline that prices them).

    Raises:
        EncryptorFailed: an encryptor died, or the drain did not finish within `timeout_s`.
    """
    await scratch.reset_queues()
    database = scratch.new_database()
    messages = workload.batches(events, per_message)
    sent, publish_seconds = 0, 0.0
    if preload:
        sent, publish_seconds = await _timed_publish(scratch, messages, service)
    with tempfile.TemporaryDirectory(prefix="pulseseal-bench-home-") as home:
        env = encryptor_env(scratch, database, service, Path(home)) | dict(extra_env or {})
        starting = time.perf_counter()
        async with (
            encryptors(processes, env) as running,
            httpx.AsyncClient(timeout=5, trust_env=False) as http,
        ):
            ready_spread = time.perf_counter() - starting
            if on_ready is not None:
                await on_ready(running)
            meter = CpuMeter({f"encryptor_{i}": p.pid for i, p in enumerate(running)} | dict(servers or {}))
            meter.start()
            if not preload:
                sent, publish_seconds = await _timed_publish(scratch, messages, service)
            result = await _watch(running, http, sent, timeout_s)
            result.cores = meter.stop()
            result.publish_seconds = publish_seconds
            result.ready_spread_s = ready_spread
    result.stored = await scratch.stored(database)
    await scratch.drop_database(database)
    return result


async def _timed_publish(
    scratch: Scratch, messages: list[Message], service: RunningKeyService
) -> tuple[int, float]:
    async with TransportSealer(service.url) as sealer:
        started = time.perf_counter()
        sent = await publish(scratch.amqp_url, messages, sealer=sealer)
    return sent, time.perf_counter() - started


async def _watch(
    running: list[EncryptorProcess], http: httpx.AsyncClient, expected: int, timeout_s: float
) -> Drain:
    first: float | None = None
    first_done = 0.0
    samples: list[tuple[float, float]] = []
    deadline = time.perf_counter() + timeout_s
    while True:
        now = time.perf_counter()
        readings = await asyncio.gather(*(p.metrics(http) for p in running))
        done = sum(r.get(SEALED, 0.0) + r.get(DUPLICATES, 0.0) for r in readings)
        if done > 0 and first is None:
            first, first_done = now, done
        if first is not None:
            samples.append((round(now - first, 3), done))
        if done >= expected and first is not None:
            return Drain(
                events=expected,
                processes=len(running),
                seconds=now - first,
                first=first_done,
                peak_rss_mb=[round(p.memory_mb(), 1) for p in running],
                cache_hits=sum(r.get(HITS, 0.0) for r in readings),
                cache_misses=sum(r.get(MISSES, 0.0) for r in readings),
                duplicates=sum(r.get(DUPLICATES, 0.0) for r in readings),
                stored=0,
                publish_seconds=0.0,
                samples=samples,
                per_process=[r.get(SEALED, 0.0) + r.get(DUPLICATES, 0.0) for r in readings],
            )
        for process in running:
            if process.exited():
                raise EncryptorFailed(f"an encryptor exited during the drain: {process.last_log_line()}")
        if now > deadline:
            raise EncryptorFailed(f"the drain did not finish in {timeout_s:.0f} s ({done:.0f}/{expected})")
        await asyncio.sleep(POLL_S)
