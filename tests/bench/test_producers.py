"""The producer benchmarks run end to end on small sizes (so `pulseseal bench` can rely on them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.producers import bench_gateway, bench_importer, generate_ndjson, start_gateway
from schemas import parse_event
from shell.processes import free_port
from tests.producers.helpers import ROOT, drain, event_ids
from tests.transit import keyservice_keys

pytestmark = pytest.mark.integration


def test_generated_files_hold_valid_distinct_events(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    generate_ndjson(path, 500)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 500
    assert len({parse_event(line).event_id for line in lines}) == 500


async def test_the_importer_bench_reports_rate_and_peak_memory(
    broker: str, keyservice: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.ndjson"
    generate_ndjson(path, 3000)
    env = {"PULSESEAL_KEYSERVICE_URL": keyservice}
    result = await asyncio.to_thread(bench_importer, path, broker, env)
    assert result.lines == 3000
    assert result.events_per_s > 0
    assert 20 < result.peak_rss_mb < 500
    assert len(event_ids(await drain(broker, keys=await keyservice_keys(keyservice)))) == 3000


async def test_the_gateway_bench_drives_a_real_gateway(broker: str, keyservice: str) -> None:
    secret = (ROOT / ".pulseseal" / "credentials" / "gateway-jwt.secret").read_text().strip().encode()
    port = free_port()
    env = {"PULSESEAL_KEYSERVICE_URL": keyservice}
    gateway = await asyncio.to_thread(start_gateway, broker, port, env)
    try:
        result = await bench_gateway(
            f"http://127.0.0.1:{port}", secret, clients=2, events_per_request=10, seconds=1.0, warmup_s=0.2
        )
    finally:
        await gateway.stop_async(30)
    assert result.failed_requests == 0
    assert result.requests > 0
    assert result.events_per_s == pytest.approx(result.requests * 10 / 1.0)
    assert 0 < result.p50_ms <= result.p99_ms
    keys = await keyservice_keys(keyservice)
    assert len(event_ids(await drain(broker, keys=keys))) >= result.requests * 10
