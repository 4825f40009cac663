"""The benchmark report: JSON shape and the terminal tables."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from bench.harness import BenchReport
from bench.report import format_value, markdown, render, to_json, write_json
from bench.results import TARGETS, Figure, ScenarioResult, judge_all


def report() -> BenchReport:
    """A small report with a measured, an unmeasured and a failed figure."""
    seal = ScenarioResult(1, "seal", "Seal", "partial", seconds=1.5)
    seal.add(Figure("ratio_raw_300", "seal ÷ raw", 0.21, "x", detail={"samples": [1, 2]}))
    seal.add(Figure("csfle_300", "CSFLE", None, "events/s", "could not run here: no server"))
    seal.notes.append("200 users")
    broken = ScenarioResult(2, "keyservice", "Keys", "failed", error="RuntimeError: gone")
    result = BenchReport(
        quick=True,
        started_at=datetime(2026, 11, 29, tzinfo=UTC),
        machine={"cpu_model": "test CPU", "cpus": 2, "memory_gib": 4.0, "python": "CPython 3.11"},
        load_start=[1.0, 1.1, 1.2],
        load_end=[1.5, 1.2, 1.2],
        seconds=3.0,
        scenarios=[seal, broken],
    )
    result.judgements = judge_all(TARGETS, result.scenarios)
    return result


def test_the_json_has_every_scenario_figure_and_target() -> None:
    data = to_json(report())
    assert data["version"] == 1
    assert data["quick"] is True
    assert data["complete"] is False
    assert data["load_average"] == {"start": [1.0, 1.1, 1.2], "end": [1.5, 1.2, 1.2]}
    assert [s["status"] for s in data["scenarios"]] == ["partial", "failed"]
    figures = data["scenarios"][0]["figures"]
    assert figures[0] == {
        "name": "ratio_raw_300",
        "label": "seal ÷ raw",
        "value": 0.21,
        "unit": "x",
        "note": "",
        "detail": {"samples": [1, 2]},
    }
    assert figures[1]["value"] is None
    verdicts = {t["figure"]: t["verdict"] for t in data["targets"]}
    assert verdicts["ratio_raw_300"] == "not met"
    assert verdicts["ratio_csfle_300"] == "not measured"
    assert len(data["targets"]) == len(TARGETS)
    json.dumps(data)  # serialisable as is


def test_the_json_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    write_json(report(), path)
    assert json.loads(path.read_text(encoding="utf-8")) == to_json(report())


def test_the_tables_show_figures_errors_notes_and_verdicts() -> None:
    out = io.StringIO()
    render(report(), Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "test CPU, 2 cores" in text
    assert "load average 1.00 / 1.10 / 1.20 at start" in text
    assert "0.21\u00d7" in text
    assert "could not run here: no server" in text
    assert "RuntimeError: gone" in text
    assert "200 users" in text
    assert "not measured" in text
    assert "not met" in text


def test_values_are_formatted_by_unit() -> None:
    assert format_value(None, "ms") == "—"
    assert format_value(0.456, "x") == "0.46\u00d7"
    assert format_value(12.345, "ms") == "12.35 ms"
    assert format_value(1234567.0, "events/s") == "1,234,567 events/s"
    assert format_value(74.0, "req/s") == "74 req/s"


def test_the_markdown_has_a_table_per_scenario_and_the_targets() -> None:
    text = markdown(to_json(report()))
    assert "load average 1.00 / 1.10 / 1.20 at start" in text
    assert "#### 1. Seal — partial" in text
    assert "| seal ÷ raw | 0.21\u00d7 |  |" in text
    assert "| CSFLE | — | could not run here: no server |" in text
    assert "- error: RuntimeError: gone" in text
    assert "| key service 1000-key p99 | <= 50.00 ms | — | not measured |" in text
