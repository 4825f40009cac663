"""Dev credentials: every file of docs/contract.md §2, mode 0600 in a 0700 directory, never overwritten."""

from __future__ import annotations

import base64
import json
import random
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from pulseseal.manifest import parse_public_keys
from shell.credentials import (
    CALLER_SCOPES,
    CredentialsError,
    ensure_dev_credentials,
    load_private_key,
    public_key_pem,
)

ALL_FILES = {
    "master.key",
    "encryptor.pem",
    "auditor.pem",
    "admin.pem",
    "gateway.pem",
    "keyservice.pem",
    "callers.json",
    "gateway-jwt.secret",
    "encryptor-signing.pem",
    "manifest-keys.json",
    "keystore-redis.password",
    "keystore-redis-keyservice.password",
}


def seeded(seed: int) -> random.Random:
    return random.Random(seed)


def test_creates_every_file_mode_0600_in_a_0700_directory(tmp_path: Path) -> None:
    directory = tmp_path / "home" / "credentials"

    report = ensure_dev_credentials(directory)

    assert set(report.created) == ALL_FILES
    assert report.warnings == []
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {p.name for p in directory.iterdir()} == ALL_FILES  # no temporary file left behind
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_master_key_is_32_random_bytes_in_base64(tmp_path: Path) -> None:
    ensure_dev_credentials(tmp_path)

    assert len(base64.b64decode((tmp_path / "master.key").read_text().strip(), validate=True)) == 32


def test_private_keys_are_unencrypted_pkcs8_ed25519(tmp_path: Path) -> None:
    ensure_dev_credentials(tmp_path)

    for name in ("encryptor", "auditor", "admin", "gateway", "keyservice"):
        pem = (tmp_path / f"{name}.pem").read_bytes()
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, not the OpenSSH format
        assert isinstance(load_pem_private_key(pem, password=None), Ed25519PrivateKey)


def test_callers_file_lists_each_caller_key_scopes_and_loopback(tmp_path: Path) -> None:
    ensure_dev_credentials(tmp_path)

    callers = json.loads((tmp_path / "callers.json").read_text())["callers"]

    assert set(callers) == {"encryptor", "auditor", "admin", "gateway"}
    assert callers["encryptor"]["scopes"] == ["keys:encrypt", "transport:open"]
    assert callers["auditor"]["scopes"] == ["keys:decrypt"]
    assert callers["admin"]["scopes"] == ["keys:admin"]
    assert callers["gateway"]["scopes"] == []
    for caller_id, entry in callers.items():
        assert set(entry) == {"public_key", "scopes", "networks"}
        assert entry["networks"] == ["127.0.0.0/8", "::1/128"]
        public = load_pem_public_key(entry["public_key"].encode())
        assert isinstance(public, Ed25519PublicKey)
        assert entry["public_key"] == public_key_pem(load_private_key(tmp_path / f"{caller_id}.pem"))


def test_gateway_secret_is_at_least_32_bytes_of_url_safe_text(tmp_path: Path) -> None:
    ensure_dev_credentials(tmp_path)

    secret = (tmp_path / "gateway-jwt.secret").read_text().strip()

    assert len(secret.encode()) >= 32
    assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    ensure_dev_credentials(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    report = ensure_dev_credentials(tmp_path)

    assert report.created == []
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_only_missing_files_are_made_and_callers_file_follows_kept_keys(tmp_path: Path) -> None:
    ensure_dev_credentials(tmp_path)
    encryptor_key = (tmp_path / "encryptor.pem").read_bytes()
    (tmp_path / "admin.pem").unlink()
    (tmp_path / "callers.json").unlink()

    report = ensure_dev_credentials(tmp_path)

    assert report.created == ["admin.pem", "callers.json"]
    assert (tmp_path / "encryptor.pem").read_bytes() == encryptor_key
    callers = json.loads((tmp_path / "callers.json").read_text())["callers"]
    assert callers["admin"]["public_key"] == public_key_pem(load_private_key(tmp_path / "admin.pem"))


def test_a_kept_callers_file_that_no_longer_matches_is_reported_not_changed(tmp_path: Path) -> None:
    ensure_dev_credentials(tmp_path)
    callers_before = (tmp_path / "callers.json").read_bytes()
    (tmp_path / "auditor.pem").unlink()

    report = ensure_dev_credentials(tmp_path)

    assert report.created == ["auditor.pem"]
    assert (tmp_path / "callers.json").read_bytes() == callers_before
    assert len(report.warnings) == 1
    assert "auditor.pem" in report.warnings[0]


def test_randomness_can_be_given_for_reproducible_credentials(tmp_path: Path) -> None:
    ensure_dev_credentials(tmp_path / "a", random_bytes=seeded(7).randbytes)
    ensure_dev_credentials(tmp_path / "b", random_bytes=seeded(7).randbytes)

    for name in sorted(ALL_FILES):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_every_default_caller_has_a_scope_except_the_gateway() -> None:
    assert {cid for cid, scopes in CALLER_SCOPES.items() if not scopes} == {"gateway"}


def test_load_private_key_names_the_file_on_failure(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    bad.chmod(0o600)

    with pytest.raises(CredentialsError, match=r"bad\.pem is not an unencrypted PEM private key"):
        load_private_key(bad)
    with pytest.raises(CredentialsError, match=r"missing\.pem does not exist"):
        load_private_key(tmp_path / "missing.pem")


def test_manifest_keys_hold_the_public_half_of_the_encryptor_signing_key(tmp_path: Path) -> None:
    ensure_dev_credentials(tmp_path)

    keys = parse_public_keys((tmp_path / "manifest-keys.json").read_text())
    signing = load_private_key(tmp_path / "encryptor-signing.pem")
    assert set(keys) == {"encryptor"}
    keys["encryptor"].verify(signing.sign(b"manifest"), b"manifest")  # raises if they do not belong together
    assert (tmp_path / "manifest-keys.json").stat().st_mode & 0o777 == 0o600


def test_a_kept_manifest_keys_file_that_does_not_match_the_signing_key_is_warned_about(
    tmp_path: Path,
) -> None:
    ensure_dev_credentials(tmp_path)
    (tmp_path / "encryptor-signing.pem").unlink()

    report = ensure_dev_credentials(tmp_path)

    assert report.created == ["encryptor-signing.pem"]
    [warning] = report.warnings
    assert "manifest-keys.json does not hold the key of encryptor-signing.pem" in warning


def test_a_kept_callers_file_without_a_newer_scope_is_reported_not_changed(tmp_path: Path) -> None:
    ensure_dev_credentials(tmp_path)
    document = json.loads((tmp_path / "callers.json").read_text())
    document["callers"]["encryptor"]["scopes"] = ["keys:encrypt"]  # as made before transport sealing
    (tmp_path / "callers.json").write_text(json.dumps(document))

    report = ensure_dev_credentials(tmp_path)

    assert report.created == []
    assert json.loads((tmp_path / "callers.json").read_text()) == document
    assert report.warnings == [
        f"{tmp_path / 'callers.json'} does not give encryptor the scope transport:open; "
        "delete it to have it made again"
    ]
