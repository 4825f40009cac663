"""The soak's key-service replica fault (`pulseseal soak --keyservice-replicas N`, N ≥ 2): SIGKILL one
replica, like a crashed host, then start it again.

The other replicas keep serving throughout, so callers should only notice a refused connection and fail
over (keyservice/client/replicas.py); the recovery measured after it (faults.py) must stay within
`RECOVERY_LIMIT_S`, or the soak fails. The replicas are killed in turn (first, second, ...), so a long
run kills each of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shell.soak.pipeline import Pipeline

KIND = "keyservice_replica_kill"
COST_S = 6.0
RECOVERY_LIMIT_S = 30.0
DESCRIPTION = f"{KIND} (SIGKILL one key-service replica, then start it again)"
DOWN_S = 2.0  # long enough for callers to meet the dead replica, and for the restart to be a restart


def kinds(keyservice_replicas: int) -> tuple[str, ...]:
    """The fault kinds this module adds for a run with `keyservice_replicas` replicas (none for one: a lone
    key service's restart is `keyservice_restart`)."""
    return (KIND,) if keyservice_replicas >= 2 else ()


async def inject(pipeline: Pipeline, occurrence: int) -> None:
    """Kill replica `occurrence % replicas` with SIGKILL, leave it down `DOWN_S`, start it again.

    Raises:
        SoakSetupError: the replica did not come back healthy.
    """
    replica = occurrence % len(pipeline.keyservices)
    pipeline.kill_keyservice_replica(replica)
    await asyncio.sleep(DOWN_S)
    await pipeline.start_keyservice_replica(replica)


def problems(results: Iterable[tuple[str, float, float | None]]) -> list[str]:
    """Each replica kill, of the faults' `(kind, started_s, disruption_s)`, whose recovery took longer
    than `RECOVERY_LIMIT_S` (the disruption: from the kill until the pipeline caught up, the time the
    replica was down included). (Plain tuples: faults.py imports this module, so it cannot import theirs.)"""
    return [
        f"fault {KIND} at +{started:.0f} s: caught up after {disruption:.1f} s, over {RECOVERY_LIMIT_S:.0f} s"
        for kind, started, disruption in results
        if kind == KIND and disruption is not None and disruption > RECOVERY_LIMIT_S
    ]
