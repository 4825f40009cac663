"""How the demo shows each step: headings, the summary table, a sealed document, command output.

Everything fits 80 columns. Event values appear only where the demo shows what a user sent (its own
synthetic data) — never from logs or documents.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import textwrap
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from shell.demo.traffic import SendReport

STEPS = 7


def line(console: Console, text: str) -> None:
    """Plain text (never markup: it may come from a command's output), indented two columns; a line
    too long for the terminal wraps, its continuation indented further."""
    for part in textwrap.wrap(text, width=console.width, initial_indent="  ", subsequent_indent="    "):
        console.print(part, markup=False, highlight=False)


def step(console: Console, number: int, title: str, command: str) -> None:
    """A step heading and the command (or endpoint) that does it."""
    console.print(f"\n[bold cyan]{number}/{STEPS} {title}[/]")
    console.print(f"  [dim]$ {command}[/]")


def summary(console: Console, report: SendReport, stored: dict[str, float], sent: int) -> None:
    """Step 4: the table of counts, throughput and latency."""
    step(console, 4, "Summary", "from the gateway's answers and the documents' sealed_at")
    latencies = sorted(
        max(0.0, stored[event_id] - sent_at) * 1000
        for event_id, sent_at in report.sent_at.items()
        if event_id in stored
    )
    last_stored = max(stored.values(), default=report.finished)
    duration = max(last_stored, report.finished) - report.started
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("events sent", f"{sent:,}")
    table.add_row("accepted by the gateway (202)", f"{report.accepted:,}")
    table.add_row("refused", f"{report.refused:,}")
    table.add_row("sealed and stored", f"{len(stored):,}")
    table.add_row("throughput, first send → last stored", f"{len(stored) / duration:,.0f} events/s")
    if latencies:
        table.add_row("latency send → sealed, p50", f"{statistics.median(latencies):,.0f} ms")
        table.add_row("latency send → sealed, p99", f"{latencies[int(0.99 * (len(latencies) - 1))]:,.0f} ms")
    table.add_row("HTTP answers", ", ".join(f"{code}: {n}" for code, n in sorted(report.statuses.items())))
    console.print(table)
    # Without this a newcomer reads a 1-2 s p50 as the pipeline's latency: it is mostly queueing.
    line(
        console,
        "Traffic is sent as fast as the gateway takes it, faster than one encryptor "
        "stores it here, so latency includes waiting in the queue (docs/benchmarks.md, "
        "scenario 3: latency at a steady load).",
    )


def sealed_next_to_event(console: Console, event: dict[str, Any], document: dict[str, Any]) -> None:
    """Step 5: the event as sent, and the document MongoDB holds for it."""
    console.print(Panel(json.dumps(event, indent=2, ensure_ascii=False), title="sent (plaintext)", width=78))
    shown = {}
    for name, value in document.items():
        if isinstance(value, bytes):
            text = value.hex()
            shown[name] = (
                f"<{len(value)} bytes> {text[:24]}…" if len(text) > 24 else f"<{len(value)} bytes> {text}"
            )
        else:
            shown[name] = str(value)
    lines = "\n".join(f"{name:<12} {value}" for name, value in shown.items())
    console.print(Panel(lines, title="stored in MongoDB (sealed_events)", width=78))


def replay_result(
    console: Console, result: subprocess.CompletedProcess[str], expected: int, identical: bool
) -> None:
    """Step 6: what the replay printed and whether it equals what was sent."""
    lines = result.stdout.splitlines()
    for text in result.stderr.strip().splitlines()[-2:]:
        line(console, text)
    console.print(f"  {len(lines)} events replayed (expected {expected}); first one:")
    if lines:
        console.print(f"  [dim]{_clip(lines[0], 76)}[/]")
    verdict = (
        "[green]identical to what was sent ✓[/]" if identical else "[red]differs from what was sent ✗[/]"
    )
    console.print(f"  byte for byte in canonical form: {verdict}")


def command_output(console: Console, result: subprocess.CompletedProcess[str]) -> None:
    """The output of a `pulseseal` command the demo ran (a JSON answer as an indented block)."""
    text = (result.stdout + result.stderr).strip()
    try:
        answer = json.loads(text)
    except ValueError:
        for output in text.splitlines():
            line(console, output)
        return
    for name, value in answer.items():
        console.print(f"  {name:<20} {_clip(str(value), 56)}")


def after_shred(console: Console, result: subprocess.CompletedProcess[str], user: str) -> None:
    """Step 7, second half: a replay of the shredded user opens nothing."""
    console.print(f'  [dim]$ pulseseal replay --user-id {user} --purpose "demo: verify erasure"[/]')
    for text in result.stderr.strip().splitlines():
        line(console, text)
    opened = len(result.stdout.splitlines())
    verdict = "[green]nothing can be opened any more ✓[/]" if opened == 0 else f"[red]{opened} opened ✗[/]"
    console.print(f"  after the shred: {verdict} (exit code {result.returncode})")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
