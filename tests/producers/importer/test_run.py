"""The importer against the real RabbitMQ: every valid line published, rejections listed, resumable."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from producers.importer.checkpoint import checkpoint_path, load_checkpoint
from producers.importer.plan import FilePlan, ImportFileError, plan_file
from producers.importer.progress import PlainProgress
from producers.importer.rejects import rejects_path
from producers.importer.run import Importer, ImportOptions
from producers.publisher import BrokerUnavailable, Publisher
from tests.factories import valid_event
from tests.producers.helpers import drain, event_ids

pytestmark = pytest.mark.integration


def event_lines(n: int, *, start: int = 0) -> list[str]:
    return [
        json.dumps(valid_event(event_id=f"00000000-0000-4000-8000-{i:012d}")) for i in range(start, start + n)
    ]


def write_mixed(path: Path, valid: int, bad_every: int) -> tuple[list[str], list[int]]:
    """`valid` events with an invalid line after every `bad_every`; returns the valid ids and bad line numbers."""
    lines, ids, bad = [], [], []
    for i, line in enumerate(event_lines(valid)):
        lines.append(line)
        ids.append(json.loads(line)["event_id"])
        if (i + 1) % bad_every == 0:
            lines.append(json.dumps(valid_event("heart_rate", event_id=ids[-1], data={"bpm": 1000})))
            bad.append(len(lines))
    path.write_text("\n".join(lines) + "\n")
    return ids, bad


class FailsAfter:
    """A publisher that loses the broker for good after `batches` confirmed batches."""

    def __init__(self, inner: Publisher, batches: int) -> None:
        self.inner, self.left = inner, batches

    async def publish(self, body: bytes, *, routing_key: str, content_type: str) -> None:
        if self.left <= 0:
            raise BrokerUnavailable("connection lost")
        self.left -= 1
        await self.inner.publish(body, routing_key=routing_key, content_type=content_type)


def plans(*paths: Path, resume: bool = False) -> list[FilePlan]:
    return [plan_file(path, None, resume=resume) for path in paths]


async def test_all_valid_lines_of_a_mixed_file_are_published_and_the_bad_ones_listed(
    publisher: Publisher, broker: str, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.ndjson"
    ids, bad = write_mixed(path, 2500, 100)
    out = io.StringIO()
    totals = await Importer(publisher, PlainProgress(out), ImportOptions(batch_events=1000)).run(plans(path))
    assert (totals.imported, totals.rejected, totals.published_now) == (2500, 25, 2500)
    messages = await drain(broker)
    assert sorted(event_ids(messages)) == sorted(ids)
    assert all(len(m.event_ids()) <= 1000 for m in messages)
    entries = [json.loads(line) for line in rejects_path(path).read_text().splitlines()]
    assert entries == [{"line": n, "field": "data.bpm", "reason": "must be ≤ 300"} for n in bad]
    assert not checkpoint_path(path).exists()
    assert f"{path}: 25 line(s) rejected, listed in {rejects_path(path)}" in out.getvalue()


async def test_several_files_csv_included_are_imported_in_one_run(
    publisher: Publisher, broker: str, tmp_path: Path
) -> None:
    first = tmp_path / "a.ndjson"
    first.write_text("\n".join(event_lines(3)) + "\n")
    second = tmp_path / "b.csv"
    second.write_text(
        "event_id,user_id,type,occurred_at,data.count,data.period_s\n"
        "aaaaaaaa-0000-4000-8000-000000000001,user-1,steps,2026-11-28T07:30:00Z,100,60\n"
    )
    empty = tmp_path / "c.ndjson"
    empty.touch()
    out = io.StringIO()
    totals = await Importer(publisher, PlainProgress(out)).run(plans(first, second, empty))
    assert (totals.imported, totals.rejected) == (4, 0)
    assert "aaaaaaaa-0000-4000-8000-000000000001" in event_ids(await drain(broker))
    assert f"{empty}: empty file, nothing to import" in out.getvalue()
    assert not rejects_path(first).exists()


async def test_a_lost_broker_stops_at_a_checkpoint_and_resume_loses_nothing(
    publisher: Publisher, broker: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.ndjson"
    ids, bad = write_mixed(path, 5000, 250)
    out = io.StringIO()
    stopping = Importer(
        FailsAfter(publisher, 2), PlainProgress(out), ImportOptions(batch_events=500, in_flight=1, retry_s=0)
    )
    with pytest.raises(ImportFileError, match="--resume"):
        await stopping.run(plans(path))
    checkpoint = load_checkpoint(path)
    assert checkpoint is not None
    assert checkpoint.imported == 1000  # two confirmed batches of 500, nothing unconfirmed counted
    first_run = event_ids(await drain(broker))
    assert len(first_run) == 1000

    resumed = await Importer(publisher, PlainProgress(out), ImportOptions(batch_events=500)).run(
        plans(path, resume=True)
    )
    assert (resumed.imported, resumed.rejected, resumed.published_now) == (5000, 20, 4000)
    assert sorted(first_run + event_ids(await drain(broker))) == sorted(ids)
    lines = [json.loads(line)["line"] for line in rejects_path(path).read_text().splitlines()]
    assert lines == bad  # each once, although the lines after the checkpoint were read twice
    assert not checkpoint_path(path).exists()
    assert f"resuming after line {checkpoint.line}" in out.getvalue()


class Slow:
    """A publisher that takes its time, counting what it confirmed."""

    def __init__(self, inner: Publisher, enough: int) -> None:
        self.inner, self.confirmed, self.enough = inner, 0, enough
        self.reached = asyncio.Event()

    async def publish(self, body: bytes, *, routing_key: str, content_type: str) -> None:
        await asyncio.sleep(0.02)
        await self.inner.publish(body, routing_key=routing_key, content_type=content_type)
        self.confirmed += 1
        if self.confirmed >= self.enough:
            self.reached.set()


async def test_an_interrupted_import_saves_its_checkpoint(
    publisher: Publisher, broker: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(event_lines(20_000)) + "\n")
    out = io.StringIO()
    slow = Slow(publisher, enough=5)
    importer = Importer(
        slow, PlainProgress(out), ImportOptions(batch_events=100, in_flight=2, checkpoint_interval_s=3600)
    )
    task = asyncio.create_task(importer.run(plans(path)))
    await asyncio.wait_for(slow.reached.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    checkpoint = load_checkpoint(path)
    assert checkpoint is not None
    assert 500 <= checkpoint.imported < 20_000
    assert checkpoint.imported % 100 == 0
    published = event_ids(await drain(broker))
    assert len(published) >= checkpoint.imported  # the checkpoint never claims more than was confirmed
    assert "interrupted" in out.getvalue()
    assert "--resume" in out.getvalue()


async def test_resume_without_a_checkpoint_imports_from_the_start(
    publisher: Publisher, broker: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(event_lines(10)) + "\n")
    out = io.StringIO()
    totals = await Importer(publisher, PlainProgress(out)).run(plans(path, resume=True))
    assert totals.imported == 10
    assert "no checkpoint to resume from; importing from the start" in out.getvalue()


async def test_a_fresh_run_replaces_an_old_checkpoint(
    publisher: Publisher, broker: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(event_lines(10)) + "\n")
    checkpoint_path(path).write_text("{}")
    out = io.StringIO()
    totals = await Importer(publisher, PlainProgress(out)).run(plans(path))
    assert totals.imported == 10
    assert "starting over" in out.getvalue()
    assert not checkpoint_path(path).exists()
    assert len(event_ids(await drain(broker))) == 10
