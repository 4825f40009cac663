"""Test helpers for the key service: throwaway credentials, tokens, and a real server in a subprocess."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shell.credentials import ensure_dev_credentials, load_private_key
from shell.processes import Child, StartFailed, run, spawn

ROOT = Path(__file__).resolve().parents[2]
ROLES = {
    "encryptor": ["keys:encrypt", "transport:open"],
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
    """Master key, caller keys, callers file and signing key in `directory`, made by the product's own
    `ensure_dev_credentials` (as `pulseseal services up` makes them); `networks` narrows a role's allowed
    networks in the callers file."""
    ensure_dev_credentials(directory)
    if networks:
        callers_file = directory / "callers.json"
        document = json.loads(callers_file.read_text())
        for role, nets in networks.items():
            document["callers"][role]["networks"] = nets
        callers_file.write_text(json.dumps(document))
    creds = Credentials(
        directory,
        master_b64=(directory / "master.key").read_text().strip(),
        signing_key=load_private_key(directory / "keyservice.pem"),
    )
    creds.keys = {role: load_private_key(creds.key_file(role)) for role in ROLES}
    return creds


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file mode 0600, as the services insist (pulseseal/secretfiles.py)."""
    path.write_bytes(data)
    path.chmod(0o600)


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
    return run(args, env=env, cwd=ROOT, timeout_s=timeout)


def start_keyservice(env: dict[str, str], *args: str, log_file: Path) -> subprocess.Popen[bytes]:
    """Start `pulseseal keyservice` and wait until `/healthz` answers 200.

    Raises:
        AssertionError: it exited or did not become ready within 20 s (its log is in the message).
    """
    child = spawn(
        "keyservice", ["keyservice", *args], env=env, log=log_file, append=False, cwd=ROOT, new_session=False
    )
    try:
        child.wait_ready(env["PULSESEAL_KEYSERVICE_URL"] + "/healthz", 20)
    except StartFailed as exc:
        child.stop(10)
        raise AssertionError(f"{exc}: {log_file.read_text()}") from None
    return child.process


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process this test started (SIGTERM, SIGKILL after 10 s)."""
    Child("process", process, None).stop(10)


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
