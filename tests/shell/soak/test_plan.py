"""The soak's pieces that need no server: the seeded schedule, canaries, the hunt's scanner, the verdict."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas import InvalidEvent, canonical_json, validate_event
from shell.soak.canaries import FIELD_KINDS, CanarySet, canary_events, invalid_canary_event, scan_paths
from shell.soak.faults import KINDS, FaultResult, PlannedFault, plan
from shell.soak.report import SoakReport

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    assert plan(7, 600, encryptors=2) == plan(7, 600, encryptors=2)
    assert plan(7, 600, encryptors=2) != plan(8, 600, encryptors=2)


def test_every_fault_kind_happens_even_in_a_short_run_and_repeatedly_in_a_long_one() -> None:
    short, long = plan(1, 60, encryptors=2), plan(1, 600, encryptors=2)
    assert {f.kind for f in short} == set(KINDS)
    assert all(sum(f.kind == k for f in long) >= 2 for k in KINDS)
    assert [f.at_s for f in long] == sorted(f.at_s for f in long)
    assert max(f.at_s for f in long) < 600
    assert all(2.0 <= f.pause_s <= 8.0 for f in long if f.kind == "mongo_pause")


def test_canary_events_are_valid_and_carry_a_canary_in_every_field_that_can_hold_one() -> None:
    canaries = CanarySet()
    events = canary_events(["soak-canary"], random.Random(3), canaries, NOW)
    sealed_text = b"".join(canonical_json(validate_event(e, now=NOW)) for e in events)
    assert set(canaries.values.values()) == set(FIELD_KINDS)
    for value in canaries.values:
        assert value.encode() in sealed_text, value  # the canonical JSON that gets sealed holds each as is


def test_the_invalid_canary_event_is_refused() -> None:
    canaries = CanarySet()
    event = invalid_canary_event("soak-canary", random.Random(4), canaries, NOW)
    with pytest.raises(InvalidEvent) as refused:
        validate_event(event, now=NOW)
    assert refused.value.field == "data.severity"


def test_the_scanner_finds_raw_and_json_escaped_canaries_across_chunk_borders(tmp_path: Path) -> None:
    canaries = CanarySet()
    events = canary_events(["u"], random.Random(5), canaries, NOW)
    notes = events[0]["data"]["notes"]
    escaped = json.dumps(notes).encode()  # ü becomes \u00fc; the ASCII token survives
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (16 * 1024 * 1024 - 10) + notes.encode() + b"y" * 100 + escaped)
    found = scan_paths([tmp_path], canaries)
    assert found.occurrences == 2
    assert found.files == 1


def test_the_verdict_fails_on_loss_and_on_a_canary_where_none_may_be() -> None:
    report = SoakReport(seed=1, rate=1, duration_s=1, accepted=3, stored=3, stored_accepted=3, matched=3)
    report.faults = [FaultResult(PlannedFault(1.0, "redis_kill"), 1.0, 2.0, 0.1, 0.2)]
    report.judge()
    assert report.passed
    lossy = SoakReport(seed=1, rate=1, duration_s=1, accepted=3, missing=["e1"])
    lossy.judge()
    assert not lossy.passed
    assert "1 accepted events are not stored" in lossy.problems
    leaky = SoakReport(seed=1, rate=1, duration_s=1, accepted=1, stored_accepted=1, matched=1)
    leaky.canaries["logs"] = scan_paths([], CanarySet())
    leaky.canaries["logs"].occurrences = 1
    leaky.judge()
    assert leaky.problems == ["1 canary occurrences in logs"]


def test_the_scanner_finds_every_canary_in_the_canonical_json_of_its_events(tmp_path: Path) -> None:
    canaries = CanarySet()
    events = canary_events(["u1", "u2"], random.Random(6), canaries, NOW)
    (tmp_path / "events.ndjson").write_bytes(b"\n".join(canonical_json(validate_event(e)) for e in events))
    found = scan_paths([tmp_path], canaries)
    assert found.distinct == set(canaries.needles())
