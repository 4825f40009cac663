"""`pulseseal run --keyservice-replicas N`: N key services on consecutive ports, and callers that know all."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from shell.keyservice_replicas import plan_replicas
from shell.processes import port_is_free
from tests.processes import free_port, start, wait_logged

pytestmark = pytest.mark.integration


def _consecutive_free_ports(count: int) -> int:
    for _ in range(50):
        first = free_port()
        if all(port_is_free(first + i) for i in range(count)):
            return first
    raise AssertionError("no run of free ports found")


def test_plan_puts_replicas_on_consecutive_ports_of_the_callers_host() -> None:
    plan = plan_replicas(3, "https://ks.internal:8700", 8700)
    assert plan.ports == (8700, 8701, 8702)
    assert plan.keyservice_url == "https://ks.internal:8700,https://ks.internal:8701,https://ks.internal:8702"
    assert plan.env(2, {"A": "1"}) == {"A": "1", "PULSESEAL_KEYSERVICE_PORT": "8702"}
    assert plan_replicas(2, "http://[::1]:8700", 9000).urls == ("http://[::1]:9000", "http://[::1]:9001")
    with pytest.raises(ValueError, match="past port 65535"):
        plan_replicas(2, "http://127.0.0.1", 65535)


def test_run_starts_the_replicas_and_every_caller_gets_their_list(
    pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    first = _consecutive_free_ports(2)
    env = {**pipeline_env, "PULSESEAL_KEYSERVICE_PORT": str(first)}
    urls = [f"http://127.0.0.1:{first}", f"http://127.0.0.1:{first + 1}"]
    run = start("run", ["run", "--keyservice-replicas", "2"], env, tmp_path)
    try:
        wait_logged(run, "are up", timeout_s=90)
        assert f"key service (2 replicas: {', '.join(urls)})" in run.log()
        for url in urls:
            assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        assert httpx.get(pipeline_env["PULSESEAL_GATEWAY_URL"] + "/healthz", timeout=5).status_code == 200
    finally:
        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(60) == 0, run.log()
    for url in urls:
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/healthz", timeout=5)
