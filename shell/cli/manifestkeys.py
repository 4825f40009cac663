"""The manifest signers' public keys, as replay and verify load them (docs/replay.md)."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pulseseal.manifest import parse_public_keys
from pulseseal.settings import Settings
from shell.cli.errors import CliError
from shell.credentials import MANIFEST_KEYS_FILE

PublicKeys = Mapping[str, Ed25519PublicKey]


def load_manifest_keys(settings: Settings) -> PublicKeys:
    """`PULSESEAL_MANIFEST_KEYS_FILE` (default `HOME/credentials/manifest-keys.json`), parsed.

    Raises:
        CliError: the file is missing, unreadable or not a manifest keys file.
    """
    path = settings.credential(settings.manifest_keys_file, MANIFEST_KEYS_FILE)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(
            f"manifest keys file {path} does not exist: `pulseseal services up` creates the dev one, or set "
            "PULSESEAL_MANIFEST_KEYS_FILE (completeness cannot be checked without it)"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot read manifest keys file {path}: {exc.strerror}") from None
    try:
        return parse_public_keys(text)
    except ValueError as exc:
        raise CliError(f"manifest keys file {path}: {exc}") from None
