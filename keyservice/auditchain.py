"""Tamper evidence for the audit log: every record is hash-chained to its writer's previous record and
signed with the key service's Ed25519 key (the one that signs erasure receipts).

Each key-service process is one *writer* (a random id chosen at start) whose records are numbered from 0.
A record's link says who wrote it (`w`), its number (`n`), the SHA-256 digest of the writer's previous
record (`p`) and, after a failed write, the numbers that never reached the store (`lost`); the signature
(`s`) covers the link and the record's exact bytes. So:

- an **edited** record fails its signature (the key never leaves the key service);
- a **deleted** record leaves a gap in its writer's numbers and a `p` that matches nothing;
- a **forged or inserted** record has no valid signature.

Known limit: records at the very end of a writer's chain (the newest) can be deleted without a gap;
`pulseseal keys audit --verify` prints the last record of each writer so an operator can compare it with
what they saw before. Numbers and links are assigned without waiting for Redis, so concurrent requests do
not queue behind one another's writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64
_DOMAIN = b"pulseseal-audit-v1\x00"


def digest(link: dict[str, Any], record: bytes) -> bytes:
    """SHA-256 over the link (without its signature) and the record's exact bytes."""
    unsigned = {k: v for k, v in link.items() if k != "s"}
    head = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(_DOMAIN + head + b"\n" + record).digest()


class ChainWriter:
    """Numbers, links and signs the records of one writer (one key-service process).

    Args:
        signer: The key service's Ed25519 key.
        writer: This writer's id (random by default).
    """

    def __init__(self, signer: Ed25519PrivateKey, writer: str | None = None) -> None:
        self._signer = signer
        self.writer = writer or os.urandom(8).hex()
        self._next = 0
        self._prev = GENESIS
        self._lost: list[int] = []

    def link(self, record: bytes) -> bytes:
        """The signed link of the next record, as JSON bytes (assigned now: call in write order)."""
        link: dict[str, Any] = {"w": self.writer, "n": self._next, "p": self._prev}
        if self._lost:
            link["lost"], self._lost = self._lost, []
        mac = digest(link, record)
        link["s"] = base64.b64encode(self._signer.sign(mac)).decode("ascii")
        self._next += 1
        self._prev = mac.hex()
        return json.dumps(link, separators=(",", ":")).encode()

    def lost(self, links: Iterable[bytes]) -> None:
        """Declare records whose write failed: the writer's next record names them as lost."""
        self._lost.extend(json.loads(link)["n"] for link in links)


@dataclass
class Verification:
    """The result of checking a whole audit trail."""

    records: int = 0
    unsigned: int = 0
    writers: dict[str, int] = field(default_factory=dict)  # writer → its last record number
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No record was edited, deleted, inserted or unsigned among signed ones."""
        return not self.problems


def verify(entries: Iterable[tuple[bytes, bytes | None]], public_key: Ed25519PublicKey) -> Verification:
    """Check `(record bytes, link bytes or None)` pairs, oldest first (archive, then stream).

    Records without a link are accepted only before the first signed one (written before signing began).
    """
    result = Verification()
    chains: dict[str, dict[int, tuple[dict[str, Any], bytes]]] = {}
    for position, (record, raw_link) in enumerate(entries):
        result.records += 1
        if raw_link is None:
            result.unsigned += 1
            if chains:
                result.problems.append(f"record {position}: not signed, after signed records (inserted?)")
            continue
        try:
            link = json.loads(raw_link)
            writer, number, signature = str(link["w"]), int(link["n"]), base64.b64decode(link["s"])
        except (ValueError, KeyError, TypeError):
            result.problems.append(f"record {position}: its chain link is unreadable")
            continue
        try:
            public_key.verify(signature, digest(link, record))
        except InvalidSignature:
            result.problems.append(
                f"writer {writer} record {number}: signature does not verify (edited or forged)"
            )
            continue
        chain = chains.setdefault(writer, {})
        if number in chain:
            result.problems.append(f"writer {writer} record {number}: appears twice")
        chain[number] = (link, record)
    for writer, chain in chains.items():
        _check_chain(writer, chain, result)
    return result


def _check_chain(writer: str, chain: dict[int, tuple[dict[str, Any], bytes]], result: Verification) -> None:
    declared_lost = {n for link, _ in chain.values() for n in link.get("lost", [])}
    last = max(chain)
    result.writers[writer] = last
    previous: str | None = GENESIS
    for number in range(last + 1):
        if number not in chain:
            if number not in declared_lost:
                result.problems.append(f"writer {writer} record {number}: missing (deleted)")
            previous = None  # the next record's link cannot be checked against a record we do not have
            continue
        link, record = chain[number]
        if previous is not None and link["p"] != previous:
            result.problems.append(f"writer {writer} record {number}: does not follow record {number - 1}")
        previous = digest(link, record).hex()
