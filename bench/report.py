"""A benchmark report as tables on a terminal (rich) and as JSON (`--json FILE`).

JSON shape (version 1): `{"version", "quick", "started_at", "seconds", "complete", "machine",
"load_average": {"start", "end"}, "scenarios": [{"number", "id", "title", "status", "seconds", "error",
"notes", "figures": [{"name", "label", "value", "unit", "note", "detail"}]}], "targets": [{"label",
"scenario", "figure", "op", "threshold", "unit", "value", "verdict"}]}`. A figure's `value` is a number,
or `null` with the reason in `note`; a verdict is "met", "not met" or "not measured".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.harness import BenchReport
from bench.results import Figure

JSON_VERSION = 1
TIMES = "\u00d7"  # the multiplication sign, as an escape: ruff takes the glyph for a typo
_VERDICT_STYLE = {"met": "green", "not met": "red", "not measured": "yellow"}


def to_json(report: BenchReport) -> dict[str, Any]:
    """The report as a JSON-ready dict (shape in the module docstring)."""
    return {
        "version": JSON_VERSION,
        "quick": report.quick,
        "started_at": report.started_at.isoformat(),
        "seconds": round(report.seconds, 2),
        "complete": report.complete,
        "machine": report.machine,
        "load_average": {"start": report.load_start, "end": report.load_end},
        "scenarios": [
            {
                "number": s.number,
                "id": s.id,
                "title": s.title,
                "status": s.status,
                "seconds": round(s.seconds, 2),
                "error": s.error,
                "notes": s.notes,
                "figures": [
                    {
                        "name": f.name,
                        "label": f.label,
                        "value": f.value,
                        "unit": f.unit,
                        "note": f.note,
                        "detail": f.detail,
                    }
                    for f in s.figures
                ],
            }
            for s in report.scenarios
        ],
        "targets": [
            {
                "label": j.target.label,
                "scenario": j.target.scenario,
                "figure": j.target.figure,
                "op": j.target.op,
                "threshold": j.target.threshold,
                "unit": j.target.unit,
                "value": j.value,
                "verdict": j.verdict,
            }
            for j in report.judgements
        ],
    }


def write_json(report: BenchReport, path: Path) -> None:
    """Write the report to `path` as indented JSON."""
    path.write_text(json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def format_value(value: float | None, unit: str) -> str:
    """A figure as a reader wants it: thousands separated, ratios with two decimals."""
    if value is None:
        return "—"
    if unit == "x":  # a ratio
        return f"{value:.2f}{TIMES}"
    if unit == "ms":
        return f"{value:.2f} ms"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:g} {unit}"


def render(report: BenchReport, console: Console) -> None:
    """Print the machine line, one table per scenario, and the targets."""
    m = report.machine
    mode = "quick" if report.quick else "full"
    console.print(
        f"[bold]pulseseal bench[/] ({mode}) on {m['cpu_model']}, {m['cpus']} cores, {m['memory_gib']} GiB, "
        f"{m['python']}; load average {_load(report.load_start)} at start, {_load(report.load_end)} at end; "
        f"{report.seconds:.1f} s"
    )
    for scenario in report.scenarios:
        table = Table(
            title=f"{scenario.number}. {scenario.title} — {scenario.status}",
            title_justify="left",
            show_lines=False,
        )
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_column("note", overflow="fold")
        for figure in scenario.figures:
            table.add_row(figure.label, format_value(figure.value, figure.unit), _note(figure))
        if scenario.error:
            table.add_row("[red]error[/]", "", scenario.error)
        for note in scenario.notes:
            table.add_row("[dim]note[/]", "", f"[dim]{note}[/]")
        console.print(table)
    targets = Table(title="Targets", title_justify="left")
    targets.add_column("target")
    targets.add_column("goal", justify="right")
    targets.add_column("measured", justify="right")
    targets.add_column("verdict")
    for j in report.judgements:
        style = _VERDICT_STYLE[j.verdict]
        targets.add_row(
            j.target.label,
            f"{j.target.op} {format_value(j.target.threshold, j.target.unit)}",
            format_value(j.value, j.target.unit),
            f"[{style}]{j.verdict}[/]",
        )
    console.print(targets)


def _note(figure: Figure) -> str:
    return figure.note if figure.value is not None else f"[yellow]{figure.note}[/]"


def _load(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "n/a"


def markdown(data: dict[str, Any]) -> str:
    """The tables of a JSON report (as `to_json` makes it) in Markdown, for docs/benchmarks.md."""
    load = data["load_average"]
    m = data["machine"]
    lines = [
        f"Run of {data['started_at'][:16].replace('T', ' ')} UTC ({'quick' if data['quick'] else 'full'}, "
        f"{data['seconds']:.0f} s) on {m['cpu_model']}, {m['cpus']} cores, {m['memory_gib']} GiB, {m['python']}; "
        f"load average {_load(load['start'])} at start, {_load(load['end'])} at end.",
        "",
    ]
    for scenario in data["scenarios"]:
        lines += [f"#### {scenario['number']}. {scenario['title']} — {scenario['status']}", ""]
        if scenario["figures"]:
            lines += ["| figure | value | note |", "|---|--:|---|"]
            for f in scenario["figures"]:
                note = str(f["note"]).replace("|", "\\|")
                lines.append(f"| {f['label']} | {format_value(f['value'], f['unit'])} | {note} |")
            lines.append("")
        lines += [f"- {note}" for note in scenario["notes"]]
        if scenario["error"]:
            lines.append(f"- error: {scenario['error']}")
        lines.append("")
    lines += ["#### Targets", "", "| target | goal | measured | verdict |", "|---|--:|--:|---|"]
    for t in data["targets"]:
        goal = f"{t['op']} {format_value(t['threshold'], t['unit'])}"
        lines.append(f"| {t['label']} | {goal} | {format_value(t['value'], t['unit'])} | {t['verdict']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m bench.report results.json: the Markdown tables of a saved run
    import sys

    print(markdown(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))), end="")
