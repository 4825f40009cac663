"""`pulseseal keyservice` and `pulseseal keys` as real subprocesses: startup refusals (one clear line, exit
2), the volatile-keystore guard on a throwaway Redis without AOF, HTTPS, and the admin commands."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyservice.client import KeyServiceClient
from keyservice.receipts import verify_receipt
from keyservice.store import KeyStore
from keyservice.wire.errors import KeyServiceUnavailable
from keyservice.wrapping import MasterKey
from shell.processes import StartFailed, free_port, spawn
from tests.keyservice.helpers import Credentials, pulseseal, server_env, start_keyservice, stop

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path, creds: Credentials, redis_url: str, prefix: str) -> dict[str, str]:
    return server_env(tmp_path / "home", creds, redis_url, prefix, free_port())


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start_keyservice(env, log_file=tmp_path / "keyservice.log")
    yield process
    stop(process)


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pulseseal: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_refuses_to_start_without_a_master_key(env: dict[str, str], tmp_path: Path) -> None:
    env["PULSESEAL_MASTER_KEY_FILE"] = str(tmp_path / "nowhere.key")
    one_line_error(pulseseal("keyservice", env=env), "no master key", "PULSESEAL_MASTER_KEY_FILE")


def test_refuses_a_malformed_master_key(env: dict[str, str]) -> None:
    env["PULSESEAL_MASTER_KEY"] = "c2hvcnQ="
    one_line_error(pulseseal("keyservice", env=env), "PULSESEAL_MASTER_KEY must decode to 32 bytes")


async def test_refuses_a_master_key_that_does_not_match_the_store(
    env: dict[str, str], redis_url: str, prefix: str
) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    await KeyStore(redis, MasterKey(os.urandom(32)), prefix=prefix).claim_master()
    await redis.aclose()
    one_line_error(pulseseal("keyservice", env=env), "master key does not match the key store")


def test_refuses_plain_http_off_loopback(env: dict[str, str]) -> None:
    everywhere = "0.0.0.0"  # noqa: S104  # nosec B104  # the refusal under test; nothing binds it
    one_line_error(pulseseal("keyservice", "--host", everywhere, env=env), "refusing to serve plain HTTP")


def test_refuses_when_redis_is_not_answering(env: dict[str, str]) -> None:
    env["PULSESEAL_KEYSTORE_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    one_line_error(pulseseal("keyservice", env=env), "is not answering")


def test_refuses_a_missing_callers_file(env: dict[str, str], tmp_path: Path) -> None:
    env["PULSESEAL_CALLERS_FILE"] = str(tmp_path / "none.json")
    one_line_error(pulseseal("keyservice", env=env), "callers file", "does not exist")


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server without AOF, started (and stopped) by this test."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "no",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("the throwaway redis-server did not start", pytrace=False)
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


def test_refuses_a_keystore_without_aof_unless_allowed(
    env: dict[str, str], volatile_redis: str, tmp_path: Path
) -> None:
    env["PULSESEAL_KEYSTORE_REDIS_URL"] = volatile_redis
    one_line_error(pulseseal("keyservice", env=env), "no AOF persistence", "--allow-volatile-keystore")
    process = start_keyservice(env, "--allow-volatile-keystore", log_file=tmp_path / "volatile.log")
    try:
        health = httpx.get(env["PULSESEAL_KEYSERVICE_URL"] + "/healthz")
        assert health.json() == {"status": "ok", "durable": False}
    finally:
        stop(process)
    assert "volatile" in (tmp_path / "volatile.log").read_text()


def test_port_in_use_is_one_line(env: dict[str, str], server: subprocess.Popen[bytes]) -> None:
    one_line_error(pulseseal("keyservice", env=env), "cannot listen on")


def test_keys_commands(env: dict[str, str], creds: Credentials, server: subprocess.Popen[bytes]) -> None:
    env["PULSESEAL_CALLER_KEY_FILE"] = str(creds.key_file("admin"))
    rotated = pulseseal("keys", "rotate", "--user-id", "cli-user", env=env)
    assert (rotated.returncode, rotated.stdout) == (0, "user cli-user: key version 1 is current\n")
    one_line_error(pulseseal("keys", "shred", "--user-id", "cli-user", env=env), "--yes")
    shred = pulseseal("keys", "shred", "--user-id", "cli-user", "--yes", env=env)
    assert shred.returncode == 0, shred.stderr
    receipt = verify_receipt(json.loads(shred.stdout), creds.signing_key.public_key())
    assert receipt.versions_destroyed == (1,)
    one_line_error(pulseseal("keys", "rotate", "--user-id", "cli-user", env=env), "rotate failed", "shredded")
    back = pulseseal("keys", "reinstate", "--user-id", "cli-user", env=env)
    assert back.stdout == "user cli-user reinstated: key version 2 is current\n"
    audit = pulseseal("keys", "audit", "--user-id", "cli-user", env=env)
    records = [json.loads(line) for line in audit.stdout.splitlines()]
    assert [(r["action"], r["outcome"]) for r in records] == [
        ("rotate", "granted"),
        ("shred", "granted"),
        ("rotate", "refused"),
        ("reinstate", "granted"),
    ]
    assert pulseseal("keys", "audit", "--since", "2999-01-01T00:00:00+00:00", env=env).stdout == ""
    one_line_error(pulseseal("keys", "audit", "--since", "soon", env=env), "RFC 3339")
    # The encryptor's key is not an admin.
    env["PULSESEAL_CALLER_KEY_FILE"] = str(creds.key_file("encryptor"))
    one_line_error(pulseseal("keys", "rotate", "--user-id", "cli-user", env=env), "scope keys:admin required")


def test_keys_command_without_a_service(env: dict[str, str], creds: Credentials) -> None:
    env["PULSESEAL_CALLER_KEY_FILE"] = str(creds.key_file("admin"))
    one_line_error(
        pulseseal("keys", "rotate", "--user-id", "u", env=env), "not reachable", "pulseseal keyservice"
    )


async def test_rewrap_command(
    env: dict[str, str], creds: Credentials, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    old = MasterKey.from_base64(creds.master_b64)
    store = KeyStore(redis, old, prefix=prefix)
    await store.check_master()
    [before], _ = await store.current_keys(["moving"])
    new_file = tmp_path / "new-master.key"
    new_file.write_text(base64.b64encode(os.urandom(32)).decode())
    new_file.chmod(0o600)
    result = pulseseal("keys", "rewrap", "--new-master-key", str(new_file), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("re-wrapped 1 data keys under master key ")
    again = pulseseal("keys", "rewrap", "--new-master-key", str(new_file), env=env)
    assert "nothing to do" in again.stdout
    moved = KeyStore(redis, MasterKey.from_file(new_file), prefix=prefix)
    await moved.check_master()
    [after], _ = await moved.current_keys(["moving"])
    assert after.b64() == before.b64()
    await redis.aclose()
    # The service now starts only with the new key.
    one_line_error(pulseseal("keyservice", env=env), "does not match")
    one_line_error(
        pulseseal("keys", "rewrap", "--new-master-key", str(tmp_path / "missing.key"), env=env),
        "rewrap failed",
    )


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "pulseseal-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def _start_https(env: dict[str, str], cert: Path) -> subprocess.Popen[bytes]:
    """Start the key service with TLS and wait until `/healthz` answers over verified HTTPS."""
    child = spawn("keyservice", ["keyservice"], env=env, log=Path(os.devnull), new_session=False)
    context = ssl.create_default_context(cafile=str(cert))
    try:
        child.wait_ready(env["PULSESEAL_KEYSERVICE_URL"] + "/healthz", 20, verify=context)
    except StartFailed:
        child.stop(10)
        pytest.fail("HTTPS key service did not start", pytrace=False)
    return child.process


async def test_https_with_a_ca_verified_client(
    env: dict[str, str], creds: Credentials, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    url = f"https://127.0.0.1:{env['PULSESEAL_KEYSERVICE_PORT']}"
    env.update(
        {
            "PULSESEAL_KEYSERVICE_TLS_CERT": str(cert),
            "PULSESEAL_KEYSERVICE_TLS_KEY": str(key),
            "PULSESEAL_KEYSERVICE_URL": url,
        }
    )
    process = _start_https(env, cert)
    try:
        async with KeyServiceClient(url, "encryptor", creds.keys["encryptor"], ca_file=cert) as client:
            assert (await client.current_key("over-tls")).version == 1
        async with KeyServiceClient(url, "encryptor", creds.keys["encryptor"], retries=0) as client:
            with pytest.raises(KeyServiceUnavailable, match="not reachable"):
                await client.current_key("unverified")  # the system CAs do not know our certificate
    finally:
        stop(process)


def test_the_listening_socket_is_tcp_so_asyncio_disables_nagle() -> None:
    # Without IPPROTO_TCP, asyncio skips TCP_NODELAY and every small answer waits ~40 ms for a delayed ACK.
    from shell.cli.keyservice import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_transport_key_commands(
    env: dict[str, str], creds: Credentials, server: subprocess.Popen[bytes], isolated_amqp_url: str
) -> None:
    env["PULSESEAL_CALLER_KEY_FILE"] = str(creds.key_file("admin"))
    env["PULSESEAL_AMQP_URL"] = isolated_amqp_url
    first = httpx.get(env["PULSESEAL_KEYSERVICE_URL"] + "/v1/transport/key").json()["key_id"]
    rotated = pulseseal("keys", "transport-rotate", env=env)
    assert rotated.returncode == 0, rotated.stderr
    second = httpx.get(env["PULSESEAL_KEYSERVICE_URL"] + "/v1/transport/key").json()["key_id"]
    assert second != first
    assert rotated.stdout.startswith(f"transport key {second} is current")
    one_line_error(
        pulseseal("keys", "transport-retire", "--key-id", second, "--yes", env=env),
        "is the current transport key",
        "transport-rotate",
    )
    refused = pulseseal("keys", "transport-retire", "--key-id", first, env=env)  # no terminal, no --yes
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert "pulseseal.seal holds" in refused.stdout
    assert "pulseseal.dead" in refused.stdout
    retired = pulseseal("keys", "transport-retire", "--key-id", first, "--yes", env=env)
    assert retired.returncode == 0, retired.stderr
    assert f"transport key {first} retired at" in retired.stdout
    one_line_error(
        pulseseal("keys", "transport-retire", "--key-id", "never-was", "--yes", env=env),
        "transport-retire failed",
        "no transport key has this id",
    )
    env["PULSESEAL_CALLER_KEY_FILE"] = str(creds.key_file("encryptor"))
    one_line_error(pulseseal("keys", "transport-rotate", env=env), "scope keys:admin required")
