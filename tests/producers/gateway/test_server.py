"""`pulseseal gateway` as a real uvicorn server: slow bodies, start-up errors, and RabbitMQ going away."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shell.cli.gateway import listening_socket
from shell.processes import StartFailed, free_port, spawn
from tests.factories import valid_event
from tests.processes import require_stopped
from tests.producers.helpers import (
    PULSESEAL,
    ROOT,
    SECRET,
    bearer,
    cli_env,
    drain,
    event_ids,
    one_line,
    run_cli,
    token,
)
from tests.transit import keyservice_keys

pytestmark = pytest.mark.integration


class Server:
    """A running `pulseseal gateway` subprocess."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def server(broker: str, keyservice: str, tmp_path: Path) -> Iterator[Server]:
    secret = tmp_path / "gateway-jwt.secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    port = free_port()
    env = cli_env(
        broker,
        keyservice_url=keyservice,
        gateway_port=str(port),
        gateway_jwt_secret_file=str(secret),
        gateway_body_timeout_s="1",
        gateway_confirm_timeout_s="2",
    )
    log = tmp_path / "gateway.log"
    gateway = spawn("gateway", ["gateway"], env=env, log=log, append=False, new_session=False)
    try:
        try:
            gateway.wait_ready(f"http://127.0.0.1:{port}/healthz", 30)
        except StartFailed:
            pytest.fail(f"the gateway did not start: {log.read_text()[-500:]}")
        yield Server(gateway.process, port, log)
    finally:
        gateway.stop(30)


def events(n: int) -> list[dict[str, object]]:
    return [valid_event(event_id=str(uuid.uuid4())) for _ in range(n)]


async def test_a_body_that_is_slow_to_arrive_gets_408_and_does_not_block_others(
    server: Server, broker: str, keyservice: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        (
            f"POST /v1/events HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token()}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n["
        ).encode()
    )
    started = time.monotonic()

    async def trickle() -> None:
        for _ in range(20):
            await asyncio.sleep(0.2)
            writer.write(b" ")
            await writer.drain()

    dripping = asyncio.create_task(trickle())
    async with httpx.AsyncClient(base_url=server.url) as client:
        meanwhile = await client.post("/v1/events", json=events(2), headers=bearer(token()))
    assert meanwhile.status_code == 202
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    assert status_line.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 3
    dripping.cancel()
    writer.close()
    assert len(event_ids(await drain(broker, keys=await keyservice_keys(keyservice)))) == 2


def test_a_port_in_use_is_one_clear_line_and_exit_2(broker: str, keyservice: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "gateway", "--port", str(port), env=cli_env(broker, keyservice_url=keyservice), timeout_s=30
        )
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in one_line(result.stderr)


async def test_the_listening_socket_gets_nagle_turned_off_on_every_connection() -> None:
    # With Nagle on, answers wait for the client's delayed ACK: half the throughput (measured).
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nodelay.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(on_connect, sock=listening_socket(("127.0.0.1", 0)))
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    assert await asyncio.wait_for(nodelay, 5) == 1
    await reader.read()
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


def test_a_missing_secret_file_is_one_clear_line_and_exit_2(
    broker: str, keyservice: str, tmp_path: Path
) -> None:
    env = cli_env(broker, gateway_jwt_secret_file=str(tmp_path / "missing.secret"))
    result = run_cli("gateway", "--port", str(free_port()), env=env, timeout_s=30)
    assert result.returncode == 2
    assert "cannot read the user-token secret" in one_line(result.stderr)


def services(action: str) -> None:
    result = subprocess.run(
        [PULSESEAL, "services", action, "rabbitmq"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    if action == "down":
        require_stopped(result.stdout, ("rabbitmq",))


@pytest.mark.slow
async def test_rabbitmq_stopping_during_traffic_gives_503s_then_recovers_and_no_202_is_lost(
    server: Server, broker: str, keyservice: str
) -> None:
    accepted: list[str] = []
    statuses: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            while not stop.is_set():
                batch = events(10)
                try:
                    response = await http.post("/v1/events", json=batch, headers=bearer(token()))
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
                    continue
                statuses.append((time.monotonic(), response.status_code))
                if response.status_code == 202:
                    accepted.extend(response.json()["event_ids"])
                else:
                    assert response.status_code == 503, response.text
                    assert int(response.headers["retry-after"]) > 0
                    await asyncio.sleep(0.05)

    async def until(condition: str, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if condition == "503" and sum(1 for _, s in statuses if s == 503) >= 5:
                return
            if condition == "202" and statuses and statuses[-1][1] == 202:
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"no {condition} within {deadline_s} s")

    clients = [asyncio.create_task(client()) for _ in range(4)]
    try:
        await asyncio.sleep(1.0)
        assert accepted, "no request was accepted before the outage"
        stopped_at = time.monotonic()
        await asyncio.to_thread(services, "down")
        await until("503", 30)
        await asyncio.to_thread(services, "up")
        started_at = time.monotonic()
        await until("202", 60)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
        # Whatever happened above, leave RabbitMQ running for everyone else on this machine.
        await asyncio.to_thread(services, "up")
    assert any(s == 503 for t, s in statuses if t > stopped_at)
    assert any(s == 202 for t, s in statuses if t > started_at)
    stored = Counter(event_ids(await drain(broker, keys=await keyservice_keys(keyservice))))
    assert {event_id: stored[event_id] for event_id in accepted} == dict.fromkeys(accepted, 1)
    assert len(accepted) == len(set(accepted))
