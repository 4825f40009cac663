"""Test helpers for the key service: throwaway credentials, tokens, and a real server in a subprocess."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[2]
ROLES = {
    "encryptor": ["keys:encrypt"],
    "auditor": ["keys:decrypt"],
    "admin": ["keys:admin"],
    "gateway": [],
}


@dataclass
class Credentials:
    """A complete set of key-service credentials in one directory (like `services up` makes)."""

    directory: Path
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    master_b64: str = ""
    signing_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def callers_file(self) -> Path:
        return self.directory / "callers.json"

    @property
    def master_key_file(self) -> Path:
        return self.directory / "master.key"

    @property
    def signing_key_file(self) -> Path:
        return self.directory / "keyservice.pem"

    def key_file(self, role: str) -> Path:
        return self.directory / f"{role}.pem"


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def make_credentials(directory: Path, networks: dict[str, list[str]] | None = None) -> Credentials:
    """Write master key, caller keys, callers file and signing key into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    creds = Credentials(directory, master_b64=base64.b64encode(os.urandom(32)).decode())
    write_private(creds.master_key_file, (creds.master_b64 + "\n").encode())
    write_private(creds.signing_key_file, pem(creds.signing_key))
    callers = {}
    for role, scopes in ROLES.items():
        key = Ed25519PrivateKey.generate()
        creds.keys[role] = key
        write_private(creds.key_file(role), pem(key))
        nets = (networks or {}).get(role, ["127.0.0.0/8", "::1/128"])
        callers[role] = {"public_key": public_pem(key), "scopes": scopes, "networks": nets}
    creds.callers_file.write_text(json.dumps({"callers": callers}))
    return creds


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file mode 0600, as the services insist (pulseseal/secretfiles.py)."""
    path.write_bytes(data)
    path.chmod(0o600)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(home: Path, creds: Credentials, redis_url: str, prefix: str, port: int) -> dict[str, str]:
    """Environment for a `pulseseal keyservice` subprocess using `creds`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSESEAL_")}
    env.update(
        {
            "PULSESEAL_HOME": str(home),
            "PULSESEAL_KEYSTORE_REDIS_URL": redis_url,
            "PULSESEAL_KEYSTORE_PREFIX": prefix,
            "PULSESEAL_KEYSERVICE_PORT": str(port),
            "PULSESEAL_KEYSERVICE_URL": f"http://127.0.0.1:{port}",
            "PULSESEAL_MASTER_KEY_FILE": str(creds.master_key_file),
            "PULSESEAL_CALLERS_FILE": str(creds.callers_file),
            "PULSESEAL_KEYSERVICE_SIGNING_KEY": str(creds.signing_key_file),
        }
    )
    return env


def pulseseal(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion."""
    return subprocess.run(
        [sys.executable, "-c", "from shell.cli import main; main()", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_keyservice(env: dict[str, str], *args: str, log_file: Path) -> subprocess.Popen[bytes]:
    """Start `pulseseal keyservice` and wait until `/healthz` answers 200.

    Raises:
        AssertionError: it exited or did not become ready within 20 s (its log is in the message).
    """
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from shell.cli import main; main()", "keyservice", *args],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = env["PULSESEAL_KEYSERVICE_URL"] + "/healthz"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"keyservice exited {process.returncode}: {log_file.read_text()}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise AssertionError(f"keyservice not ready in 20 s: {log_file.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process this test started."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims_for(
    role: str,
    method: str,
    path: str,
    body: bytes,
    scope: str,
    *,
    now: float | None = None,
    lifetime: int = 30,
) -> dict[str, object]:
    """Valid claims for one request (tests then spoil one of them)."""
    from keyservice.client.tokens import AUDIENCE, body_hash

    issued = int(time.time() if now is None else now)
    return {
        "iss": role,
        "aud": AUDIENCE,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": b64url(os.urandom(12)),
        "scope": scope,
        "htm": method,
        "htu": path,
        "bh": body_hash(body),
    }


def unsigned_jwt(header: Mapping[str, object], claims: Mapping[str, object], signature: bytes = b"") -> str:
    """A JWT with whatever header and signature a test wants."""
    head = b64url(json.dumps(header).encode())
    payload = b64url(json.dumps(claims).encode())
    return f"{head}.{payload}.{b64url(signature)}"
