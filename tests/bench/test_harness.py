"""The benchmark harness without servers: scenario selection, failures kept apart, targets judged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bench.harness import SCENARIOS, BenchContext, ScenarioSpec, run_bench, select
from bench.results import TARGETS, Figure, ScenarioResult
from pulseseal.settings import Settings

OPENED: list[str] = []


async def measures(ctx: BenchContext, result: ScenarioResult) -> None:
    """A scenario that measures one figure (and uses a shared resource twice)."""
    first = await ctx.shared("thing", _thing)
    second = await ctx.shared("thing", _thing)
    assert first is second
    result.add(Figure("ratio_raw_300", "seal ÷ raw", ctx.pick(quick=0.7, full=0.1), "x"))


async def half_measures(ctx: BenchContext, result: ScenarioResult) -> None:
    """A scenario with a figure it could not measure."""
    result.add(Figure("thousand_keys_p99_ms", "p99", None, "ms", "could not run here: reasons"))


async def breaks(ctx: BenchContext, result: ScenarioResult) -> None:
    """A scenario that fails halfway."""
    result.add(Figure("kept", "measured before the failure", 1.0, "events/s"))
    raise RuntimeError("server went away\nsecond line")


@asynccontextmanager
async def _thing(ctx: BenchContext) -> AsyncIterator[str]:
    OPENED.append("open")
    yield "thing"
    OPENED.append("closed")


def spec(number: int, id_: str, function: str | None) -> ScenarioSpec:
    """A scenario spec whose run is a function of this module."""
    return ScenarioSpec(number, id_, f"test {id_}", None if function is None else f"{__name__}:{function}")


def test_every_scenario_of_the_issue_is_registered_once() -> None:
    assert [s.number for s in SCENARIOS] == [1, 2, 3, 4, 5, 6, 7]
    assert len({s.id for s in SCENARIOS}) == 7
    assert {t.scenario for t in TARGETS} <= {s.id for s in SCENARIOS}


def test_selection_by_id_or_number_keeps_registry_order() -> None:
    assert [s.id for s in select([])] == [s.id for s in SCENARIOS]
    assert [s.id for s in select(["keyservice", "1"])] == ["seal", "keyservice"]


def test_an_unknown_scenario_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'sael': choose from seal, keyservice"):
        select(["sael"])


async def test_a_run_keeps_each_scenarios_outcome_apart_and_judges_the_targets() -> None:
    OPENED.clear()
    report = await run_bench(
        [
            spec(1, "seal", "measures"),
            spec(2, "keyservice", "half_measures"),
            spec(3, "e2e", "breaks"),
            spec(4, "scaleout", None),
        ],
        quick=True,
        settings=Settings(),
    )
    assert OPENED == ["open", "closed"]
    statuses = {s.id: s.status for s in report.scenarios}
    assert statuses == {"seal": "ok", "keyservice": "partial", "e2e": "failed", "scaleout": "not implemented"}
    broken = report.scenarios[2]
    assert broken.error == "RuntimeError: server went away"
    assert [f.name for f in broken.figures] == ["kept"]
    assert not report.complete
    verdicts = {j.target.figure: j.verdict for j in report.judgements}
    assert verdicts["ratio_raw_300"] == "met"
    assert verdicts["thousand_keys_p99_ms"] == "not measured"
    assert verdicts["gateway_events_per_s"] == "not measured"
    assert report.machine["cpus"] >= 1
    assert len(report.load_start) == 3


async def test_the_full_mode_picks_the_full_sizes() -> None:
    report = await run_bench([spec(1, "seal", "measures")], quick=False, settings=Settings())
    assert report.scenarios[0].value("ratio_raw_300") == 0.1
    assert report.complete
