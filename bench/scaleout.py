"""Scenario 4 — scale-out: the drain of scenario 3 with 1 and with 2 encryptor processes.

The same events (the scenario 3 workload, 1000 a message), drained once by one encryptor and once by two
started together, each run into an empty database; the events are published once the encryptors are
ready (see `bench.encryptors.drain`, `preload=False`). Beside each rate: how many
events each process stored, its peak RSS, and the cores every process used — on a 2-core machine that is
what says whether a second encryptor can help at all.
"""

from __future__ import annotations

from bench.cpu import server_pids
from bench.e2e import check_exactly_once, describe_cores, drain_detail, mongo_port
from bench.encryptors import Drain, drain
from bench.harness import BenchContext
from bench.keyservice import shared_keyservice
from bench.results import Figure, ScenarioResult, ratio
from bench.scratch import shared_scratch
from bench.traffic import shared_workload


async def run(ctx: BenchContext, result: ScenarioResult) -> None:
    """Drain the same queue with 1 and 2 encryptors."""
    service = await ctx.shared("keyservice", shared_keyservice)
    scratch = await ctx.shared("scratch", shared_scratch)
    workload = await ctx.shared("workload", shared_workload)
    events = len(workload.lines)
    result.notes.append(
        f"{events:,} events of {workload.users:,} users as {events // 1000} messages of 1000, each time "
        "published once every encryptor is ready (in well under a second: the backlog is deep from the "
        "first batch), so that a second process shares it from the start instead of the first taking a "
        "whole prefetch of 64 messages before the second runs; the key service already holds every "
        "user's key (scenario 3 created them), each encryptor starts with an empty key cache"
    )
    drains: dict[int, Drain] = {}
    for processes in (1, 2):
        ctx.say(f"  scaleout: draining {events:,} events with {processes} encryptor(s)")
        servers = server_pids(mongo_port(ctx.settings.mongo_url), ctx.settings.home_dir)
        drained = await drain(
            scratch, service, workload, events, processes=processes, servers=servers, preload=False
        )
        check_exactly_once(drained)
        drains[processes] = drained
        shares = ", ".join(f"{n / events:.0%}" for n in drained.per_process)
        result.add(
            Figure(
                f"drain_{processes}_events_per_s",
                f"drain with {processes} encryptor{'s' if processes > 1 else ''}",
                round(drained.events_per_s),
                "events/s",
                f"{describe_cores(drained.cores)}; events stored per process: {shares}",
                drain_detail(drained),
            )
        )
        result.add(
            Figure(
                f"peak_rss_{processes}_mb",
                f"peak RSS per encryptor, {processes} encryptor{'s' if processes > 1 else ''}",
                max(drained.peak_rss_mb),
                "MB",
                "VmHWM of each: " + ", ".join(f"{mb:.0f} MB" for mb in drained.peak_rss_mb),
            )
        )
    speedup = ratio(drains[2].events_per_s, drains[1].events_per_s)
    result.add(
        Figure(
            "speedup",
            "2 encryptors ÷ 1 encryptor",
            None if speedup is None else round(speedup, 3),
            "x",
        )
    )
    result.notes.append(_bound(drains))


def _encryptor_cores(cores: dict[str, float]) -> float:
    return sum(value for name, value in cores.items() if name.startswith("encryptor"))


def _bound(drains: dict[int, Drain]) -> str:
    # What the cores say: the server near one core and the machine near all of its cores means the
    # database (one writer at a time) and the machine are the limit, not the number of encryptors.
    one, two = drains[1].cores, drains[2].cores
    server = "mongo_server"
    if server not in one or server not in two:
        return "what bounds it: the MongoDB-compatible server's CPU could not be read here"
    return (
        f"what bounds it: the MongoDB-compatible server used {one[server]:.2f} cores with one encryptor "
        f"and {two[server]:.2f} with two, the whole machine {one.get('machine', 0):.2f} and "
        f"{two.get('machine', 0):.2f} of its cores, the encryptors together {_encryptor_cores(one):.2f} "
        f"and {_encryptor_cores(two):.2f}"
    )
