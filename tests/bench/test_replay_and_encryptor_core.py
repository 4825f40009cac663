"""Scenarios 6 (replay) and 7 (encryptor per core) run directly, quick, against the suite's servers."""

from __future__ import annotations

import pytest

from bench import encryptor_core, replay
from bench.harness import BenchContext
from bench.results import ScenarioResult
from pulseseal.settings import Settings


def context(settings: Settings) -> BenchContext:
    return BenchContext(quick=True, settings=settings, seed=7, progress=lambda _: None)


async def test_encryptor_core_seals_every_event_and_reports_per_core_and_wall_rates(
    settings: Settings,
) -> None:
    result = ScenarioResult(7, "encryptor_core", "t", "ok")
    await encryptor_core.run(context(settings), result)
    per_core, per_wall = result.value("events_per_core_s"), result.value("events_per_wall_s")
    assert per_core is not None
    assert per_wall is not None
    # CPU time of this process never exceeds its wall time by more than its threads could add.
    assert per_core >= per_wall * 0.9
    share = result.value("transport_open_share")
    assert share is not None
    assert 0 < share < 100


@pytest.mark.integration
async def test_replay_opens_the_users_1000_events_at_both_sizes(settings: Settings, mongo_url: str) -> None:
    result = ScenarioResult(6, "replay", "t", "ok")
    await replay.run(context(settings), result)  # raises unless every replay wrote all 1,000 events
    small, large = result.value("replay_small_s"), result.value("replay_large_s")
    assert small is not None
    assert large is not None
    assert result.value("replay_growth") == pytest.approx(large / small)
    assert any(note.startswith("store: ") for note in result.notes)
