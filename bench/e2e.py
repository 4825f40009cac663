"""Scenario 3 — end to end: the drain, the stage ceilings, the naive and peer pipelines, a fixed load.

All on the benchmark's own virtual host and databases (`bench.scratch`), with the benchmark's key service
(shared with scenario 2), in this order:

1. **Drain**: N events of 10 000 users (the realistic mix, 1000 per NDJSON message) pre-loaded on
   `pulseseal.seal`, then one `pulseseal encryptor` process started: events/s from the first stored
   event to the last, its peak RSS (the whole queue is the backlog), its key-cache hit ratio, the cores
   each process used; afterwards the collection must hold exactly N documents.
2. **Stage ceilings** on the same events (`bench.ceilings`): raw consume, raw `insert_many` (as many calls
   in flight as the encryptor keeps), raw
   key-cache-hit seal; the slowest is the ceiling the drain is compared with. Also measured, to explain
   the gap: decoding + sealing (the encryptor's CPU per event) and raw `insert_many` beside a CPU load
   the size of the encryptor's share during the drain.
3. **Baselines** (`bench.baselines`): the naive and the peer pipeline drain a smaller pre-loaded queue
   of single-event messages (they are slow); the ratios compare rates.
4. **Fixed offered load** (`bench.offered`) at half the drain rate: latency from publish to stored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from bench import ceilings
from bench.baselines import BaselineRun, run_baseline
from bench.cpu import server_pids
from bench.encryptors import Drain, drain
from bench.harness import BenchContext
from bench.keyservice import shared_keyservice
from bench.offered import offered_load
from bench.results import Figure, ScenarioResult, ratio
from bench.scratch import shared_scratch
from bench.traffic import make_workload, shared_workload

_CORE_NAMES = {"mongo_server": "MongoDB server", "rabbitmq": "RabbitMQ", "machine": "whole machine"}


def describe_cores(cores: dict[str, float]) -> str:
    """`encryptor_0 0.31, MongoDB server 0.62, …` for a note."""
    parts = [f"{_CORE_NAMES.get(name, name.replace('_', ' '))} {value:.2f}" for name, value in cores.items()]
    return "cores used: " + ", ".join(parts)


def mongo_port(url: str) -> int:
    """The port of the first host of a MongoDB URL."""
    return urlsplit(url).port or 27017


def drain_detail(result: Drain) -> dict[str, Any]:
    """The JSON detail of a drain."""
    return {
        "events": result.events,
        "processes": result.processes,
        "seconds": round(result.seconds, 3),
        "stored_at_first_poll": result.first,
        "publish_seconds": round(result.publish_seconds, 3),
        "ready_spread_s": round(result.ready_spread_s, 3),
        "peak_rss_mb": result.peak_rss_mb,
        "cores": result.cores,
        "stored": result.stored,
        "duplicates": result.duplicates,
        "samples": result.samples[:: max(1, len(result.samples) // 200)],
    }


def check_exactly_once(result: Drain) -> None:
    """Every event stored once: the collection holds exactly as many documents as events were sent.

    Raises:
        RuntimeError: it does not.
    """
    if result.stored != result.events:
        raise RuntimeError(f"the drain stored {result.stored} documents for {result.events} events")


async def run(ctx: BenchContext, result: ScenarioResult) -> None:
    """Measure the drain, the ceilings, the baselines and the fixed offered load."""
    service = await ctx.shared("keyservice", shared_keyservice)
    scratch = await ctx.shared("scratch", shared_scratch)
    workload = await ctx.shared("workload", shared_workload)
    settings = ctx.settings
    events = len(workload.lines)
    result.notes.append(
        f"{events:,} events of {workload.users:,} users (mix of shell.synthetic, ~"
        f"{sum(map(len, workload.lines)) // events} B of JSON each), 1000 per NDJSON message; encryptor "
        f"defaults: batches of {settings.batch_max_events} events, {settings.batch_max_ms} ms, prefetch "
        f"{settings.prefetch}, {settings.flushes_in_flight} flushes in flight; journaled write concern"
    )

    ctx.say(f"  e2e: draining {events:,} pre-loaded events with one encryptor")
    servers = server_pids(mongo_port(settings.mongo_url), settings.home_dir)
    drained = await drain(scratch, service, workload, events, servers=servers)
    rate = drained.events_per_s
    result.add(
        Figure(
            "drain_events_per_s",
            f"end to end: {events:,} pre-loaded events, 1 encryptor",
            round(rate),
            "events/s",
            f"first to last stored ({drained.seconds:.1f} s); {describe_cores(drained.cores)}",
            drain_detail(drained),
        )
    )
    # The same drain by encryptors that write no batch manifests, in the same run: what manifests cost.
    ctx.say(f"  e2e: draining {events:,} pre-loaded events again, without batch manifests")
    plain = await drain(scratch, service, workload, events, servers=servers, manifests=False)
    check_exactly_once(plain)
    result.add(
        Figure(
            "drain_without_manifests_per_s",
            f"end to end: {events:,} pre-loaded events, 1 encryptor writing no batch manifests",
            round(plain.events_per_s),
            "events/s",
            f"bench.plain_encryptor; first to last stored ({plain.seconds:.1f} s); {describe_cores(plain.cores)}",
        )
    )
    result.add(
        Figure(
            "manifests_drain_ratio",
            "drain with batch manifests / drain without (same run)",
            round(rate / plain.events_per_s, 3),
            "x",
            "one signed manifest document per flush in seal_manifests (docs/replay.md); the issue asks >= 0.9",
        )
    )
    result.add(
        Figure(
            "encryptor_peak_rss_mb",
            "encryptor peak RSS during the drain",
            drained.peak_rss_mb[0],
            "MB",
            f"VmHWM; the queue held all {events // 1000} messages when it started",
        )
    )
    hit_ratio = drained.hit_ratio
    result.add(
        Figure(
            "key_cache_hit_ratio",
            "encryptor key-cache hit ratio during the drain",
            None if hit_ratio is None else round(hit_ratio * 100, 2),
            "%",
            f"{drained.cache_hits:,.0f} hits, {drained.cache_misses:,.0f} misses "
            f"({workload.users:,} users, keys cached for their expires_in)",
        )
    )
    keyservice = ctx.results.get("keyservice")
    if keyservice is not None and hit_ratio is not None:
        keyservice.add(
            Figure(
                "encryptor_key_cache_hit_ratio",
                "encryptor key-cache hit ratio (scenario 3's drain)",
                round(hit_ratio * 100, 2),
                "%",
                f"{events:,} events of {workload.users:,} users; keys cached for their expires_in (60 s)",
            )
        )
    check_exactly_once(drained)
    result.notes.append(f"exactly once: {drained.stored:,} documents for {events:,} events after the drain")

    slowest = await _ceilings(ctx, result, drained)
    result.add(
        Figure("ratio_slowest_stage", "end to end ÷ slowest stage ceiling", _ratio(rate, slowest), "x")
    )
    await _baselines(ctx, result, rate)
    await _offered(ctx, result, rate)


def _ratio(a: float | None, b: float | None) -> float | None:
    value = ratio(a, b)
    return None if value is None else round(value, 3)


async def _ceilings(ctx: BenchContext, result: ScenarioResult, drained: Drain) -> float:
    scratch = await ctx.shared("scratch", shared_scratch)
    workload = await ctx.shared("workload", shared_workload)
    settings = ctx.settings
    batch, events, in_flight = settings.batch_max_events, len(workload.lines), settings.flushes_in_flight
    ctx.say("  e2e: stage ceilings (raw consume, raw seal, raw insert_many)")
    consume = await ceilings.raw_consume(scratch, workload, events, prefetch=settings.prefetch)
    parsed = workload.events(events)
    keys = ceilings.memory_keys(workload)
    min_seconds, repeats = ctx.pick(quick=0.2, full=1.0), ctx.pick(quick=2, full=5)
    seal = ceilings.raw_seal(parsed, keys, batch=batch, min_seconds=min_seconds, repeats=repeats)
    decode = ceilings.decode_and_seal(
        workload, events, keys, batch=batch, min_seconds=min_seconds, repeats=repeats
    )
    batches = ceilings.sealed_batches(parsed, keys, batch=batch)
    del parsed
    insert = await ceilings.raw_insert(scratch, batches, in_flight=in_flight)
    one_at_a_time = await ceilings.raw_insert(scratch, batches, in_flight=1)
    stages = {"raw consume": consume, "raw insert_many": insert, "raw seal": seal.per_s}
    name, slowest = min(stages.items(), key=lambda item: item[1])
    share = drained.cores.get("encryptor_0", 0.0)
    loader = await ceilings.start_cpu_load(events / max(insert, 1.0) * 3 + 30, share)
    try:
        loaded = await ceilings.raw_insert(scratch, batches, in_flight=in_flight)
    finally:
        loader.terminate()
        await loader.wait()
    for figure in (
        Figure(
            "ceiling_consume_per_s",
            "ceiling: raw consume (aio-pika, ack each message, no parsing)",
            round(consume),
            "events/s",
            f"the same {events // 1000} messages; prefetch {settings.prefetch}",
        ),
        Figure(
            "ceiling_insert_per_s",
            f"ceiling: raw insert_many of sealed documents ({batch} a call, {in_flight} in flight)",
            round(insert),
            "docs/s",
            "journaled, unordered, {user_id, occurred_at} index; documents sealed beforehand",
        ),
        Figure(
            "ceiling_seal_per_s",
            f"ceiling: raw seal_many, keys in memory ({batch} a call)",
            round(seal.per_s),
            "events/s",
            f"{seal.per_cpu_s:,.0f}/s of CPU time",
        ),
        Figure("slowest_stage_per_s", "slowest stage ceiling", round(slowest), "events/s", name),
        Figure(
            "insert_sequential_per_s",
            "raw insert_many, one call at a time (for comparison)",
            round(one_at_a_time),
            "docs/s",
            "the server idles while the client encodes and sends the next batch",
        ),
        Figure(
            "decode_seal_per_s",
            "decode NDJSON + seal_many (the encryptor's CPU work), one core",
            round(decode.per_s),
            "events/s",
            f"{1e6 / decode.per_cpu_s:.1f} µs of CPU an event",
        ),
        Figure(
            "ceiling_insert_loaded_per_s",
            "raw insert_many beside a decode+seal load of the encryptor's share",
            round(loaded),
            "docs/s",
            f"load process duty-cycled to {share:.2f} of a core, what the encryptor used in the drain",
        ),
        Figure(
            "ratio_insert_loaded",
            "end to end ÷ raw insert_many beside that load",
            _ratio(drained.events_per_s, loaded),
            "x",
        ),
    ):
        result.add(figure)
    return slowest


async def _baselines(ctx: BenchContext, result: ScenarioResult, rate: float) -> None:
    service = await ctx.shared("keyservice", shared_keyservice)
    scratch = await ctx.shared("scratch", shared_scratch)
    workload = await ctx.shared("workload", shared_workload)
    naive_n = ctx.pick(quick=100, full=5000)
    peer_n, peer_users = ctx.pick(quick=(200, 20), full=(10_000, 200))
    runs: dict[str, BaselineRun | str] = {}
    ctx.say(f"  e2e: naive pipeline, {naive_n} single-event messages")
    try:
        runs["naive"] = await run_baseline("naive", scratch, service, workload, naive_n)
    except Exception as exc:  # noqa: BLE001 - reported in the table, the rest of the scenario goes on
        runs["naive"] = f"could not run: {type(exc).__name__}: {exc}"[:300]
    ctx.say(f"  e2e: peer pipeline (MongoDB explicit encryption), {peer_n} single-event messages")
    try:
        peer_workload = make_workload(peer_n, peer_users, ctx.seed + 1)
        runs["peer"] = await run_baseline(
            "peer", scratch, service, peer_workload, peer_n, peer_users=peer_users
        )
    except Exception as exc:  # noqa: BLE001 - reported in the table, the rest of the scenario goes on
        runs["peer"] = f"could not run: {type(exc).__name__}: {exc}"[:300]
    labels = {
        "naive": (
            "naive pipeline (FastStream, key request + seal + insert_one per event)",
            f"{naive_n:,} events of the drain's users (their keys exist), one per message",
        ),
        "peer": (
            "peer pipeline (FastStream, MongoDB explicit encryption + insert_one)",
            f"{peer_n:,} events of {peer_users} users, one per message; data keys created and cached "
            "before the drain",
        ),
    }
    for kind, (label, note) in labels.items():
        run = runs[kind]
        value = None if isinstance(run, str) else run.events_per_s
        detail = {} if isinstance(run, str) else {"seconds": run.seconds, "setup_seconds": run.setup_seconds}
        result.add(
            Figure(
                f"{kind}_events_per_s",
                label,
                None if value is None else round(value, 1),
                "events/s",
                run if isinstance(run, str) else note,
                detail,
            )
        )
        result.add(Figure(f"ratio_{kind}", f"end to end ÷ {kind} pipeline", _ratio(rate, value), "x"))


async def _offered(ctx: BenchContext, result: ScenarioResult, rate: float) -> None:
    service = await ctx.shared("keyservice", shared_keyservice)
    scratch = await ctx.shared("scratch", shared_scratch)
    workload = await ctx.shared("workload", shared_workload)
    target = rate / 2
    seconds = ctx.pick(quick=2.0, full=30.0)
    ctx.say(f"  e2e: fixed offered load of {target:,.0f} events/s for {seconds:.0f} s")
    load = await offered_load(scratch, service, workload, rate=target, seconds=seconds)
    lat = load.latency
    note = (
        f"{lat.n} messages of 100 events; stored = the encryptor's durable count, polled every 25 ms "
        f"(see bench/offered.py); peak RSS {load.peak_rss_mb:.0f} MB"
    )
    result.add(
        Figure(
            "offered_per_s",
            "fixed offered load (50 % of the drain rate), 1 encryptor",
            round(load.offered_per_s),
            "events/s",
            f"target {target:,.0f}/s for {load.seconds:.1f} s",
        )
    )
    for name, label, value in (
        ("latency_p50_ms", "publish → stored latency, p50", lat.p50_ms),
        ("latency_p99_ms", "publish → stored latency, p99", lat.p99_ms),
        ("latency_max_ms", "publish → stored latency, max", lat.max_ms),
    ):
        result.add(Figure(name, label, round(value, 1), "ms", note if name == "latency_p50_ms" else ""))
    if load.stored != load.events:
        raise RuntimeError(f"the fixed load stored {load.stored} documents for {load.events} events")
