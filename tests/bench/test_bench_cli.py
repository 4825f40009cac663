"""`pulseseal bench` as a real subprocess: `--quick --json` against the local servers, and usage errors.

No assertion here is on how fast anything is: the figures are checked for shape (numbers, targets
judged), never against thresholds — timing on a shared CI machine proves nothing.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shell.processes import run

ALL = ["seal", "keyservice", "e2e", "scaleout", "producers", "replay", "encryptor_core"]
# A figure of each scenario that the quick run must measure (the targets' figures are checked apart).
EXPECTED = {
    "seal": (
        "seal_many_300",
        "raw_300",
        "tink_300",
        "csfle_300",
        "esdk_300",
        "ratio_csfle_4k",
        "transport_seal_us_1000",
        "transport_open_us_1000",
    ),
    "keyservice": ("thousand_keys_p99_ms", "encryptor_key_cache_hit_ratio"),
    "e2e": (
        "drain_events_per_s",
        "key_cache_hit_ratio",
        "ceiling_consume_per_s",
        "ceiling_insert_per_s",
        "ceiling_seal_per_s",
        "slowest_stage_per_s",
        "naive_events_per_s",
        "peer_events_per_s",
        "offered_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
        "latency_max_ms",
    ),
    "scaleout": ("drain_1_events_per_s", "drain_2_events_per_s", "speedup", "peak_rss_2_mb"),
    "producers": ("gateway_p99_ms", "importer_events_per_s"),
    "replay": ("replay_small_s", "replay_large_s", "id_find_small_ms", "id_find_large_ms", "replay_growth"),
    "encryptor_core": ("events_per_core_s", "transport_open_share", "events_per_wall_s", "cpu_us_per_event"),
}


def pulseseal(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `pulseseal ARGS` with the test environment."""
    return run(args, timeout_s=timeout)


@pytest.mark.integration
@pytest.mark.slow
def test_a_quick_run_measures_every_scenario_and_judges_every_target(
    tmp_path: Path, mongo_url: str, keystore_redis_url: str
) -> None:
    out = tmp_path / "bench.json"
    result = pulseseal("bench", "--quick", "--json", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert data["version"] == 1
    assert data["quick"] is True
    assert data["complete"] is True
    assert data["machine"]["cpus"] >= 1
    assert len(data["load_average"]["start"]) == 3
    assert [s["id"] for s in data["scenarios"]] == ALL
    for scenario in data["scenarios"]:
        assert scenario["status"] == "ok", scenario
        assert scenario["figures"], scenario["id"]
        for figure in scenario["figures"]:
            value = figure["value"]
            assert isinstance(value, int | float), figure
            assert math.isfinite(value), figure
            assert value > 0, figure
    names = {(s["id"], f["name"]) for s in data["scenarios"] for f in s["figures"]}
    for scenario_id, figures in EXPECTED.items():
        for name in figures:
            assert (scenario_id, name) in names
    verdicts = {t["figure"]: t["verdict"] for t in data["targets"]}
    assert len(verdicts) == 11
    # Every target is judged on a measured figure; whether it is met is for the full run to say.
    assert set(verdicts.values()) <= {"met", "not met"}, verdicts
    # The tables went to stdout; progress to stderr.
    assert "Targets" in result.stdout
    assert "scenario 1 (seal)" in result.stderr


def test_an_unknown_scenario_is_one_line_and_exit_2() -> None:
    result = pulseseal("bench", "--scenario", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pulseseal: unknown scenario 'nope': choose from seal, keyservice, e2e, scaleout, producers, replay, "
        "encryptor_core"
    ]


def test_a_json_file_in_a_missing_directory_is_refused_before_running(tmp_path: Path) -> None:
    result = pulseseal("bench", "--scenario", "e2e", "--json", str(tmp_path / "missing" / "out.json"))
    assert result.returncode == 2
    assert "no such directory" in result.stderr


@pytest.mark.parametrize("events", ["1500", "0", "-1000"])
def test_events_that_are_not_whole_messages_are_refused_before_running(events: str) -> None:
    result = pulseseal("bench", "--scenario", "e2e", "--events", events)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"pulseseal: --events must be a positive multiple of 1000 (whole messages), not {events}"
    ]
