"""The encryptor's usage reporter (consumers/usage.py): counts per key version, sent in batches, kept on failure."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from consumers.usage import UsageReporter


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[tuple[str, int], int]] = []
        self.failing = False

    async def __call__(self, counts: Mapping[tuple[str, int], int]) -> None:
        if self.failing:
            raise ConnectionError("key service away")
        self.sent.append(dict(counts))


def docs(*refs: tuple[str, int]) -> list[dict[str, object]]:
    return [{"user_id": user, "key_version": version} for user, version in refs]


async def test_counts_are_aggregated_per_key_version_and_sent_together() -> None:
    send = Recorder()
    reporter = UsageReporter(send, interval_s=60)
    reporter.count(docs(("a", 1), ("a", 1), ("b", 2)))
    reporter.count(docs(("a", 1), ("a", 2)))
    await reporter.report()
    await reporter.report()  # nothing new: nothing sent
    assert send.sent == [{("a", 1): 3, ("b", 2): 1, ("a", 2): 1}]


async def test_a_failed_report_is_kept_and_added_to_the_next() -> None:
    send = Recorder()
    reporter = UsageReporter(send, interval_s=60)
    reporter.count(docs(("a", 1)))
    send.failing = True
    await reporter.report()
    reporter.count(docs(("a", 1), ("c", 1)))
    send.failing = False
    await reporter.report()
    assert send.sent == [{("a", 1): 2, ("c", 1): 1}]


async def test_reports_run_every_interval_and_the_last_counts_go_out_at_close() -> None:
    send = Recorder()
    reporter = UsageReporter(send, interval_s=0.01)
    reporter.start()
    reporter.count(docs(("a", 1)))
    for _ in range(100):
        if send.sent:
            break
        await asyncio.sleep(0.01)
    reporter.count(docs(("b", 1)))
    await reporter.close(1.0)
    assert send.sent[0] == {("a", 1): 1}
    assert send.sent[-1] == {("b", 1): 1}
    assert not reporter.pending
