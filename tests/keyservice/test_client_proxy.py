"""The key-service client never goes through a proxy from the environment: tokens and data keys would
cross it, in cleartext on plain HTTP. A real key service and a listening "proxy" that records visits."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from keyservice.client import KeyServiceClient
from shell.processes import free_port
from tests.keyservice.helpers import Credentials, server_env, start_keyservice, stop

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path, creds: Credentials, redis_url: str, prefix: str) -> dict[str, str]:
    return server_env(tmp_path / "home", creds, redis_url, prefix, free_port())


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start_keyservice(env, log_file=tmp_path / "keyservice.log")
    yield process
    stop(process)


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A TCP listener posing as an HTTP proxy: it records what arrives and answers 502."""
    visits: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        visits.append(await reader.read(65536))
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield f"http://127.0.0.1:{port}", visits


async def test_the_client_ignores_proxy_variables(
    server: subprocess.Popen[bytes],
    env: dict[str, str],
    creds: Credentials,
    proxy: tuple[str, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy_url, visits = proxy
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy_url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with KeyServiceClient(
        env["PULSESEAL_KEYSERVICE_URL"], "encryptor", creds.keys["encryptor"], retries=0
    ) as client:
        key = await client.current_key("proxied-user")
    assert key.user_id == "proxied-user"
    assert visits == []  # nothing, not even the request line, reached the proxy
