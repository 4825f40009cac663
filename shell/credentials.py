"""Development credentials (docs/contract.md §2): created by `pulseseal services up` when missing.

Everything lands in `PULSESEAL_HOME/credentials/` (mode 0700), each file mode 0600, and an existing file is
never overwritten — not even when it looks wrong; delete it to have it made again. The files:

- `master.key`: 32 random bytes, base64 (the key service only).
- `encryptor.pem`, `auditor.pem`, `admin.pem`, `gateway.pem`: Ed25519 private keys, unencrypted PKCS#8
  PEM; the caller id is the file's stem. `gateway` has no scope at all: it exists to prove that the
  gateway cannot obtain keys.
- `keyservice.pem`: the key service's own Ed25519 key, which signs erasure receipts.
- `encryptor-signing.pem`: the encryptors' Ed25519 key that signs batch manifests (docs/replay.md), and
  `manifest-keys.json`: its public key under the signer name `encryptor`, which replay and verify trust.
- `callers.json`: the key service's callers file (format in `docs/callers-file.md`), made from the
  callers' keys above.
- `gateway-jwt.secret`: the HS256 secret for user tokens, 48 URL-safe characters.
- `keystore-redis.password`: the password of the key-store Redis's `default` user (43 URL-safe characters),
  which `infra/redis.sh` starts Redis with and admin tools and tests authenticate with.
- `keystore-redis-keyservice.password`: the password of the key-store Redis's restricted ACL user
  `pulseseal-keyservice` (43 URL-safe characters), which `infra/redis.sh` adds and the key service
  connects as (docs/keyservice.md, "The key store's users").

Production deployments point the settings at their own files; nothing here is meant for them.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from pulseseal.files import create_atomic
from pulseseal.secretfiles import SecretFileError, read_secret

RandomBytes = Callable[[int], bytes]

#: Caller id → the scopes its dev key is given in `callers.json`.
CALLER_SCOPES: Mapping[str, tuple[str, ...]] = {
    "encryptor": ("keys:encrypt", "transport:open"),
    "auditor": ("keys:decrypt",),
    "admin": ("keys:admin",),
    "gateway": (),
}
#: Dev callers may call from loopback only.
LOOPBACK_NETWORKS: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
MASTER_KEY_FILE = "master.key"
CALLERS_FILE = "callers.json"
KEYSERVICE_KEY_FILE = "keyservice.pem"
ENCRYPTOR_SIGNING_KEY_FILE = "encryptor-signing.pem"
MANIFEST_KEYS_FILE = "manifest-keys.json"
MANIFEST_SIGNER = "encryptor"
GATEWAY_JWT_SECRET_FILE = "gateway-jwt.secret"  # noqa: S105  # nosec B105  # a file name, not a secret
KEYSTORE_REDIS_PASSWORD_FILE = "keystore-redis.password"  # noqa: S105  # nosec B105  # a file name, not a secret
KEYSTORE_REDIS_KEYSERVICE_PASSWORD_FILE = "keystore-redis-keyservice.password"  # noqa: S105  # nosec B105  # a file name, not a secret
_SECRET_CHARS = 48  # URL-safe base64 of 36 random bytes: 48 characters, 216 bits


class CredentialsError(Exception):
    """A credential file cannot be created or read; the message names the file, never its content."""


@dataclass
class CredentialsReport:
    """What `ensure_dev_credentials` did.

    Attributes:
        directory: The credentials directory.
        created: Names of the files created by this call, in creation order.
        warnings: One line per inconsistency found among files that were kept (never fixed silently).
    """

    directory: Path
    created: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def ensure_dev_credentials(directory: Path, *, random_bytes: RandomBytes = os.urandom) -> CredentialsReport:
    """Create whichever dev credentials are missing in `directory`; keep every existing file as it is.

    Args:
        directory: The credentials directory (created mode 0700 if missing, and tightened to 0700).
        random_bytes: Source of randomness, for deterministic tests; `os.urandom` by default.

    Returns:
        The files created and any warning about kept files that do not match each other.

    Raises:
        CredentialsError: The directory or a file cannot be written, or a kept key file cannot be read.
    """
    report = CredentialsReport(directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
    except OSError as exc:
        raise CredentialsError(f"cannot create {directory}: {exc.strerror}") from None

    def create(name: str, make: Callable[[], bytes]) -> None:
        # `make` runs only for a missing file, so kept files consume no randomness.
        if not (directory / name).exists() and _write_new(directory / name, make()):
            report.created.append(name)

    create(MASTER_KEY_FILE, lambda: base64.b64encode(_exactly(random_bytes, 32)) + b"\n")
    for name in (*(f"{cid}.pem" for cid in CALLER_SCOPES), KEYSERVICE_KEY_FILE, ENCRYPTOR_SIGNING_KEY_FILE):
        create(name, lambda: private_key_pem(_new_ed25519(random_bytes)))
    create(
        GATEWAY_JWT_SECRET_FILE,
        lambda: base64.urlsafe_b64encode(_exactly(random_bytes, _SECRET_CHARS * 3 // 4)) + b"\n",
    )
    for name in (KEYSTORE_REDIS_PASSWORD_FILE, KEYSTORE_REDIS_KEYSERVICE_PASSWORD_FILE):
        create(name, lambda: base64.urlsafe_b64encode(_exactly(random_bytes, 32)).rstrip(b"=") + b"\n")
    public_keys = {cid: public_key_pem(load_private_key(directory / f"{cid}.pem")) for cid in CALLER_SCOPES}
    create(CALLERS_FILE, lambda: callers_document(public_keys).encode() + b"\n")
    report.warnings.extend(_mismatches(directory / CALLERS_FILE, public_keys))
    signing = public_key_pem(load_private_key(directory / ENCRYPTOR_SIGNING_KEY_FILE))
    create(MANIFEST_KEYS_FILE, lambda: manifest_keys_document({MANIFEST_SIGNER: signing}).encode() + b"\n")
    report.warnings.extend(_manifest_key_mismatch(directory / MANIFEST_KEYS_FILE, signing))
    return report


def manifest_keys_document(public_keys: Mapping[str, str]) -> str:
    """The manifest keys file's text (docs/replay.md) for signer name → public key PEM."""
    return json.dumps({"keys": dict(public_keys)}, indent=2)


def callers_document(public_keys: Mapping[str, str]) -> str:
    """The dev `callers.json` text for the given caller id → public key PEM.

    Raises:
        KeyError: A caller id is not one of `CALLER_SCOPES`.
    """
    callers = {
        cid: {"public_key": pem, "scopes": list(CALLER_SCOPES[cid]), "networks": list(LOOPBACK_NETWORKS)}
        for cid, pem in public_keys.items()
    }
    return json.dumps({"callers": callers}, indent=2)


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """An Ed25519 private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def public_key_pem(key: Ed25519PrivateKey) -> str:
    """The SubjectPublicKeyInfo PEM text of a private key's public half."""
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an unencrypted PKCS#8 PEM Ed25519 private key (a caller's, or the key service's).

    Raises:
        CredentialsError: The file is missing, unreadable, accessible by group or others, or not an
            unencrypted Ed25519 private key.
    """
    try:
        key = load_pem_private_key(read_secret(path), password=None)
    except SecretFileError as exc:
        raise CredentialsError(str(exc)) from None
    except FileNotFoundError:
        raise CredentialsError(f"{path} does not exist; `pulseseal services up` creates dev keys") from None
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise CredentialsError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CredentialsError(f"{path} is not an Ed25519 private key")
    return key


def _new_ed25519(random_bytes: RandomBytes) -> Ed25519PrivateKey:
    # An Ed25519 private key is any 32 bytes, so the key can come from the injectable source.
    return Ed25519PrivateKey.from_private_bytes(_exactly(random_bytes, 32))


def _exactly(random_bytes: RandomBytes, size: int) -> bytes:
    data = random_bytes(size)
    if len(data) != size:
        raise ValueError(f"random_bytes returned {len(data)} bytes instead of {size}")
    return data


def _write_new(path: Path, content: bytes) -> bool:
    """Write `content` to a new file `path`, mode 0600; False when the path exists already.

    The content goes to a private temporary file that is then hard-linked into place: the link fails if
    the name exists (no overwrite, even racing another `up`), and a reader never sees half a file.
    """
    try:
        return create_atomic(path, content)
    except OSError as exc:
        raise CredentialsError(f"cannot write {path}: {exc.strerror}") from None


def _manifest_key_mismatch(keys_file: Path, signing_pem: str) -> list[str]:
    """A warning when a kept manifest keys file does not hold the signing key's public half."""
    try:
        listed = json.loads(keys_file.read_text(encoding="utf-8")).get("keys", {})
    except (OSError, ValueError, AttributeError):
        return [f"{keys_file} is not a readable manifest keys file; delete it to have it made again"]
    if not isinstance(listed, dict) or listed.get(MANIFEST_SIGNER) != signing_pem:
        return [
            f"{keys_file} does not hold the key of {ENCRYPTOR_SIGNING_KEY_FILE}; replay will find every "
            "new manifest's signature bad: delete it to have it made again"
        ]
    return []


def _mismatches(callers_file: Path, public_keys: Mapping[str, str]) -> list[str]:
    """Warnings for callers whose key in a kept `callers.json` is not the one in their `.pem` file."""
    try:
        listed = json.loads(callers_file.read_text(encoding="utf-8")).get("callers", {})
    except (OSError, ValueError, AttributeError):
        return [f"{callers_file} is not a readable callers file; delete it to have it made again"]
    if not isinstance(listed, dict):
        return [f"{callers_file} has no `callers` object; delete it to have it made again"]
    warnings = [
        f"{callers_file} does not hold the key of {cid}.pem; delete it to have it made again"
        for cid, pem in public_keys.items()
        if not isinstance(listed.get(cid), dict) or listed[cid].get("public_key") != pem
    ]
    # A file made by an older version lacks scopes added since (the encryptor's `transport:open`).
    warnings += [
        f"{callers_file} does not give {cid} the scope {scope}; delete it to have it made again"
        for cid, scopes in CALLER_SCOPES.items()
        if isinstance(listed.get(cid), dict) and isinstance(listed[cid].get("scopes"), list)
        for scope in scopes
        if scope not in listed[cid]["scopes"]
    ]
    return warnings
