"""The encryptor's `/readyz`: 200 only while every check passes, 503 from the moment one fails or it drains."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from consumers.encryptor import Encryptor
from consumers.readiness import CHECKS, Readiness, ReadinessWatch, start_status_server
from pulseseal import mongo
from pulseseal.settings import Settings
from tests.consumers.helpers import FakeKeySource
from tests.transit import local_gate


def _all_passing(readiness: Readiness) -> None:
    for check in CHECKS:
        readiness.mark(check, True)


def test_ready_only_when_every_check_passed_and_not_stopping() -> None:
    readiness = Readiness()
    assert readiness.report() == (False, dict.fromkeys(CHECKS, False))
    _all_passing(readiness)
    assert readiness.report()[0]
    readiness.mark("keyservice", False)
    assert readiness.report() == (False, {**dict.fromkeys(CHECKS, True), "keyservice": False})
    readiness.mark("keyservice", True)
    readiness.stopping()
    assert readiness.report()[0] is False


async def test_a_probe_that_raises_or_hangs_fails_its_check_only() -> None:
    readiness = Readiness(["fine", "raises", "hangs"])

    async def fine() -> bool:
        return True

    async def raises() -> bool:
        raise ConnectionRefusedError

    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    watch = ReadinessWatch(readiness, {"fine": fine, "raises": raises, "hangs": hangs}, timeout_s=0.05)
    await watch.probe_once()
    assert readiness.report() == (False, {"fine": True, "raises": False, "hangs": False})


async def test_the_watch_keeps_probing_until_stopped() -> None:
    readiness = Readiness(["flaky"])
    answers = iter([False, True])

    async def flaky() -> bool:
        return next(answers, True)

    watch = ReadinessWatch(readiness, {"flaky": flaky}, interval_s=0.01)
    await watch.start()
    assert readiness.report()[0] is False
    for _ in range(100):
        if readiness.report()[0]:
            break
        await asyncio.sleep(0.01)
    assert readiness.report()[0] is True
    await watch.stop()
    assert readiness.report()[0] is False


@pytest.fixture
def served() -> Iterator[tuple[Readiness, str]]:
    readiness = Readiness()
    server = start_status_server("127.0.0.1", 0, readiness)
    try:
        yield readiness, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_readyz_and_metrics_share_the_metrics_port(served: tuple[Readiness, str]) -> None:
    readiness, url = served
    refused = httpx.get(url + "/readyz")
    assert refused.status_code == 503
    assert refused.json() == {"ready": False, "checks": dict.fromkeys(CHECKS, False)}
    _all_passing(readiness)
    ready = httpx.get(url + "/readyz")
    assert (ready.status_code, ready.json()["ready"]) == (200, True)
    metrics = httpx.get(url + "/metrics")
    assert metrics.status_code == 200
    assert "pulseseal_events_sealed_total" in metrics.text


def test_a_port_in_use_is_an_os_error(served: tuple[Readiness, str]) -> None:
    _, url = served
    with pytest.raises(OSError, match="in use"):
        start_status_server("127.0.0.1", int(url.rsplit(":", 1)[1]), Readiness())


@pytest.fixture
async def encryptor(
    isolated_amqp_url: str, mongo_url: str, mongo_db: str
) -> AsyncIterator[tuple[Encryptor, FakeKeySource]]:
    settings = Settings(amqp_url=isolated_amqp_url, mongo_url=mongo_url, mongo_db=mongo_db, batch_max_ms=20)
    client: AsyncMongoClient[dict[str, Any]] = mongo.connect(mongo_url)
    keys = FakeKeySource()
    encryptor = Encryptor(settings, keys, client, transport=local_gate())
    await encryptor.app.start()
    try:
        yield encryptor, keys
    finally:
        await encryptor.app.stop()
        await client.close()


@pytest.mark.integration
async def test_a_running_encryptor_is_ready_until_its_key_source_fails_or_it_drains(
    encryptor: tuple[Encryptor, FakeKeySource],
) -> None:
    running, keys = encryptor
    # Started: one round ran before the app counted as started, with the broker, the queue and MongoDB real.
    assert running.readiness.report() == (True, dict.fromkeys(CHECKS, True))
    keys.unavailable = True
    await running.readiness_watch.probe_once()
    assert running.readiness.report() == (False, {**dict.fromkeys(CHECKS, True), "keyservice": False})
    keys.unavailable = False
    await running.readiness_watch.probe_once()
    assert running.readiness.report()[0]
    await running.drain()
    assert running.readiness.report()[0] is False
