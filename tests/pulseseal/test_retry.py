"""The one retry policy: backoff bounds, Retry-After, attempt and time limits, and which failures count."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from pulseseal.retry import Backoff, retry, retry_after_s


class Busy(Exception):
    def __init__(self, retry_after_s: float | None = None) -> None:
        super().__init__("busy")
        self.retry_after_s = retry_after_s


class Flaky:
    """Fails with the given exceptions in turn, then answers "done"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures, self.calls = list(failures), 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.mark.parametrize(("jitter", "low"), [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)])
def test_delays_double_up_to_the_cap_within_the_jitter(jitter: float, low: float) -> None:
    backoff, rng = Backoff(initial_s=0.1, cap_s=1.0, jitter=jitter), random.Random(1)
    for retry_number, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (10_000, 1.0)]:
        for _ in range(50):
            assert low * ceiling <= backoff.delay(retry_number, rng) <= ceiling


async def test_retries_what_on_accepts_and_sleeps_between() -> None:
    operation, sleep = Flaky(Busy(), Busy()), Recorder()
    assert (
        await retry(operation, on=lambda e: isinstance(e, Busy), backoff=Backoff(jitter=0), sleep=sleep)
        == "done"
    )
    assert (operation.calls, sleep.sleeps) == (3, [0.1, 0.2])


async def test_any_other_failure_is_raised_at_once() -> None:
    operation, sleep = Flaky(KeyError("x")), Recorder()
    with pytest.raises(KeyError):
        await retry(operation, on=lambda e: isinstance(e, Busy), backoff=Backoff(), sleep=sleep)
    assert (operation.calls, sleep.sleeps) == (1, [])


async def test_the_last_failure_is_raised_when_the_attempts_run_out() -> None:
    operation = Flaky(Busy(), Busy(), Busy())
    with pytest.raises(Busy):
        await retry(
            operation, on=lambda e: isinstance(e, Busy), backoff=Backoff(), attempts=2, sleep=Recorder()
        )
    assert operation.calls == 2


async def test_retry_after_replaces_the_backoff_up_to_its_bound() -> None:
    operation, sleep = Flaky(Busy(retry_after_s=7.0), Busy(retry_after_s=600.0)), Recorder()
    backoff = Backoff(max_retry_after_s=30.0)
    await retry(operation, on=lambda e: isinstance(e, Busy), backoff=backoff, sleep=sleep)
    assert sleep.sleeps == [7.0, 30.0]


async def test_within_s_stops_at_the_deadline_and_never_sleeps_past_it() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    sleeps: list[float] = []
    operation = Flaky(*[Busy() for _ in range(100)])
    with pytest.raises(Busy):
        await retry(
            operation,
            on=lambda e: isinstance(e, Busy),
            backoff=Backoff(initial_s=1.0, cap_s=4.0, jitter=0),
            within_s=10.0,
            sleep=sleep,
            clock=lambda: now[0],
        )
    assert sleeps == [1.0, 2.0, 4.0, 3.0]  # the last wait ends at the deadline, where one last attempt runs
    assert operation.calls == 5


async def test_an_earlier_failure_counts_as_the_first_attempt() -> None:
    operation, sleep = Flaky(), Recorder()
    await retry(
        operation, on=lambda e: isinstance(e, Busy), backoff=Backoff(jitter=0), sleep=sleep, failed=Busy()
    )
    assert (operation.calls, sleep.sleeps) == (1, [0.1])


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("12", 12.0),
        ("soon", None),
        ("-1", None),
        ("Fri, 04 Dec 2026 18:00:30 GMT", 30.0),
        ("Fri, 04 Dec 2026 17:59:00 GMT", 0.0),  # in the past: retry now
    ],
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    assert retry_after_s(header, now=datetime(2026, 12, 4, 18, 0, tzinfo=UTC)) == seconds
