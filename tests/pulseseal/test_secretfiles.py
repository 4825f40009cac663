"""Secret files are refused when group or others may read them (as ssh refuses a private key), with the
command that fixes it; every loader of a secret goes through the check."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.client.tokens import load_private_key as load_caller_key
from keyservice.wrapping import MasterKey
from producers.gateway.auth import TokenVerifier
from pulseseal.secretfiles import SecretFileError, open_new_private, read_secret
from shell.credentials import load_private_key as load_dev_key
from shell.credentials import private_key_pem
from tests.keyservice.helpers import write_private


def master_file(path: Path) -> None:
    write_private(path, base64.b64encode(os.urandom(32)) + b"\n")


def key_file(path: Path) -> None:
    write_private(path, private_key_pem(Ed25519PrivateKey.generate()))


def secret_file(path: Path) -> None:
    write_private(path, b"s" * 40 + b"\n")


LOADERS: list[tuple[Callable[[Path], None], Callable[[Path], object]]] = [
    (master_file, MasterKey.from_file),
    (key_file, load_caller_key),
    (key_file, load_dev_key),
    (
        secret_file,
        lambda p: TokenVerifier.from_files(secret_file=p, secret_required=True, jwks_file=None, audience="a"),
    ),
]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
@pytest.mark.parametrize(("make", "load"), LOADERS)
def test_a_secret_file_open_to_group_or_others_is_refused_with_the_fix(
    tmp_path: Path, make: Callable[[Path], None], load: Callable[[Path], object], mode: int
) -> None:
    path = tmp_path / "secret"
    make(path)
    load(path)  # 0600: fine
    path.chmod(mode)
    with pytest.raises(Exception, match="chmod 600") as caught:
        load(path)
    assert str(path) in str(caught.value)
    assert "ssss" not in str(caught.value)


def test_read_secret_reads_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "s"
    write_private(path, b"hello")
    assert read_secret(path) == b"hello"
    path.chmod(0o400)
    assert read_secret(path) == b"hello"
    path.chmod(0o604)
    with pytest.raises(SecretFileError, match="mode 0604"):
        read_secret(path)


def test_new_private_files_never_follow_or_reuse_what_is_at_the_name(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("untouched")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        open_new_private(link)
    with pytest.raises(FileExistsError):
        open_new_private(target)
    assert target.read_text() == "untouched"
    fd = open_new_private(tmp_path / "fresh")
    os.close(fd)
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o600
