"""The soak's key-service replica fault (shell/soak/replica_faults.py): scheduled only with replicas, judged
against its 30 s limit."""

from __future__ import annotations

from shell.soak import replica_faults
from shell.soak.faults import KINDS, FaultResult, PlannedFault, plan
from shell.soak.report import SoakReport


def test_the_replica_kill_is_scheduled_only_when_there_are_replicas_to_fail_over_to() -> None:
    assert replica_faults.kinds(1) == ()
    kinds = KINDS + replica_faults.kinds(2)
    schedule = plan(5, 60, encryptors=2, kinds=kinds)
    assert {f.kind for f in schedule} == set(kinds)
    assert replica_faults.DESCRIPTION in [f.describe() for f in schedule]


def _kill(disruption_s: float) -> FaultResult:
    return FaultResult(
        PlannedFault(10.0, replica_faults.KIND), started_s=10.0, ended_s=13.0, caught_up_s=disruption_s - 3.0
    )


def test_a_replica_kill_recovered_past_30_s_fails_the_soak() -> None:
    quick, slow = SoakReport(seed=1, rate=10, duration_s=60), SoakReport(seed=1, rate=10, duration_s=60)
    quick.faults, slow.faults = [_kill(12.0)], [_kill(12.0), _kill(31.5)]
    quick.judge()
    slow.judge()
    assert not [p for p in quick.problems if replica_faults.KIND in p]
    assert [p for p in slow.problems if replica_faults.KIND in p] == [
        f"fault {replica_faults.KIND} at +10 s: caught up after 31.5 s, over 30 s"
    ]
    assert slow.by_kind()[replica_faults.KIND]["disruption_s"] == 31.5
