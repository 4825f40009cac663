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

if TYPE_CHECKING:  # faults.py imports this module; these are for annotations only
    from shell.soak.faults import FaultResult
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


def problems(results: Iterable[FaultResult]) -> list[str]:
    """A replica kill whose recovery took longer than `RECOVERY_LIMIT_S` (the disruption, from the kill
    until the pipeline caught up, counting the time the replica was down)."""
    return [
        f"fault {KIND} at +{r.started_s:.0f} s: caught up after {r.disruption_s:.1f} s, over {RECOVERY_LIMIT_S:.0f} s"
        for r in results
        if r.fault.kind == KIND and r.disruption_s is not None and r.disruption_s > RECOVERY_LIMIT_S
    ]
