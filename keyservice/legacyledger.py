"""The shred ledger as earlier versions kept it: a signed NDJSON file per key-service process. At start the
key service imports such a file into the ledger in the key store (ledger.py), once: entries already there
are not appended again. Kept only for upgrades; nothing writes the file any more.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.ledger import LedgerEntry, ShredLedger
from keyservice.wire.errors import LedgerError

_CONTEXT = b"pulseseal-shred-ledger/v1\n"


def read_legacy_file(path: Path, key: Ed25519PrivateKey) -> list[LedgerEntry]:
    """The verified entries of an old ledger file (a torn last line is skipped); none when it is absent.

    Raises:
        LedgerError: unreadable, or a complete line that is not a valid signed entry.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LedgerError(f"cannot read the old shred ledger {path}: {type(exc).__name__}") from None
    data = data[: data.rfind(b"\n") + 1]
    entries = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            signature = base64.b64decode(document.pop("signature"), validate=True)
            key.public_key().verify(
                signature, _CONTEXT + json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
            )
            if document["event"] == "shred":
                entries.append(
                    LedgerEntry(
                        "shred",
                        str(document["user_id"]),
                        str(document["at"]),
                        versions_destroyed=tuple(int(v) for v in document["versions_destroyed"]),
                        max_destroyed=int(document["max_destroyed"]),
                    )
                )
            elif document["event"] == "reinstate":
                entries.append(
                    LedgerEntry(
                        "reinstate",
                        str(document["user_id"]),
                        str(document["at"]),
                        version=int(document["version"]),
                    )
                )
            else:
                raise ValueError
        except InvalidSignature:
            raise LedgerError(f"old shred ledger {path} line {number}: signature does not verify") from None
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise LedgerError(f"old shred ledger {path} line {number}: not a ledger entry") from None
    return entries


async def import_legacy_file(ledger: ShredLedger, path: Path, key: Ed25519PrivateKey) -> int:
    """Append the old file's entries that the ledger in the key store lacks (in file order); returns how many.

    Raises:
        LedgerError: the file or the ledger does not verify, or the ledger cannot be written.
    """
    old = read_legacy_file(path, key)
    if not old:
        return 0
    have = {json.dumps(e.body(), sort_keys=True) for e in await ledger.load()}
    missing = [e for e in old if json.dumps(e.body(), sort_keys=True) not in have]
    await ledger.append_many(missing)
    return len(missing)
