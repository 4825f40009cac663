"""The erasure benchmark, small: it loads users, rewrites, shreds and measures cache drops on the real
key-store Redis, prints every figure, and leaves nothing under its prefix."""

from __future__ import annotations

import re

import pytest
from redis import Redis

from bench.erasure import main

pytestmark = pytest.mark.integration


async def test_the_erasure_benchmark_measures_every_figure_and_cleans_up(
    keystore_redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await main(keystore_redis_url, users=300, shreds=30, drops=3)
    out = capsys.readouterr().out
    assert "loaded 300 users" in out
    assert re.search(r"key store on disk: [\d.,]+ MB before a rewrite, [\d.,]+ MB after", out)
    assert re.search(r"30 concurrent shreds: [\d,]+ shreds/s, \d+ AOF rewrites", out)
    drop = re.search(r"cache drop after destroyed_at over 3 shreds: p50 ([\d.-]+) ms", out)
    assert drop is not None
    assert float(drop.group(1)) < 1000
    client = Redis.from_url(keystore_redis_url)
    try:
        assert not list(client.scan_iter(match="pulseseal:bench-erasure:*", count=1000))
    finally:
        client.close()
