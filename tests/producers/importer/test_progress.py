"""Progress: a bar on a terminal, plain periodic lines everywhere else — counts and offsets only."""

from __future__ import annotations

import io

from rich.console import Console

from producers.importer.progress import PlainProgress, RichProgress, progress_for


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_and_a_pipe_gets_lines() -> None:
    assert isinstance(progress_for(io.StringIO()), PlainProgress)
    bar = progress_for(Terminal())
    assert isinstance(bar, RichProgress)
    bar.close()


def test_plain_lines_come_at_most_once_per_interval() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = PlainProgress(out, interval_s=5, clock=lambda: now[0])
    progress.start("events.ndjson", total_bytes=1000, done_bytes=0)
    progress.update(100, imported=90, rejected=1)
    now[0] = 5.0
    progress.update(500, imported=450, rejected=2)
    now[0] = 6.0
    progress.update(600, imported=550, rejected=2)
    now[0] = 10.0
    progress.update(1000, imported=900, rejected=3)
    assert out.getvalue().splitlines() == [
        "events.ndjson: 50% read, 450 events imported, 2 rejected",
        "events.ndjson: 100% read, 900 events imported, 3 rejected",
    ]


def test_the_bar_shows_the_file_its_counts_and_notes() -> None:
    screen = Terminal()
    bar = RichProgress(Console(file=screen, force_terminal=True, width=150))
    bar.start("events.ndjson", total_bytes=1000, done_bytes=100)
    bar.update(500, imported=400, rejected=1)
    bar.note("a note")
    bar.finish()
    bar.close()
    shown = screen.getvalue()
    assert "events.ndjson" in shown
    assert "400 events, 1 rejected" in shown
    assert "a note" in shown
