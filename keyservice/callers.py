"""The callers file: who may call the key service, with which key, scopes and source networks.

```json
{"callers": {"encryptor": {"public_key": "-----BEGIN PUBLIC KEY-----...", "scopes": ["keys:encrypt"],
                           "networks": ["127.0.0.0/8", "::1/128"]}}}
```
A caller may have several keys (`public_keys`: a list of PEM texts, instead of or beside `public_key`), so
its key can be rotated without downtime; a token names its key by `kid` (`tokens.key_id`). Keys are Ed25519 SubjectPublicKeyInfo PEM; any other key type is refused when the file is loaded, which is
one of the two locks (with `algorithms=["EdDSA"]`) against algorithm confusion.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from keyservice.client.tokens import key_id
from keyservice.wire.errors import StartupRefused

SCOPES = frozenset({"keys:encrypt", "keys:decrypt", "keys:admin", "transport:open"})
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class CallerPolicy:
    """What one caller is allowed."""

    caller_id: str
    keys: Mapping[str, Ed25519PublicKey]  # kid → key
    scopes: frozenset[str]
    networks: tuple[Network, ...]

    def keys_for(self, kid: object) -> list[Ed25519PublicKey]:
        """The keys a token with header `kid` may be signed with: that key, or all when it names none."""
        if kid is None:
            return list(self.keys.values())
        key = self.keys.get(kid) if isinstance(kid, str) else None
        return [key] if key is not None else []

    def allows_address(self, address: str) -> bool:
        """True when `address` (the TCP peer) is in one of the caller's networks."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)


class CallerRegistry:
    """Caller id → policy, as loaded from a callers file."""

    def __init__(self, policies: Mapping[str, CallerPolicy]) -> None:
        self._policies = dict(policies)

    def allows_peer(self, address: str) -> bool:
        """True when some caller may call from `address` (the union of all callers' networks)."""
        return any(policy.allows_address(address) for policy in self._policies.values())

    def get(self, caller_id: str) -> CallerPolicy | None:
        """The caller's policy, or None for an unknown caller."""
        return self._policies.get(caller_id)

    def __len__(self) -> int:
        return len(self._policies)

    @classmethod
    def from_file(cls, path: Path) -> CallerRegistry:
        """Load and validate a callers file.

        Raises:
            StartupRefused: missing, not JSON, or an entry that is not a valid caller (named in the message).
        """
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StartupRefused(
                f"callers file {path} does not exist; set PULSESEAL_CALLERS_FILE "
                "(`pulseseal services up` creates a dev one)"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StartupRefused(f"cannot read callers file {path}: {type(exc).__name__}") from None
        return cls.from_document(document, source=str(path))

    @classmethod
    def from_document(cls, document: object, *, source: str = "callers file") -> CallerRegistry:
        """Validate a parsed callers document.

        Raises:
            StartupRefused: the document is not a valid callers file.
        """
        callers = document.get("callers") if isinstance(document, dict) else None
        if not isinstance(callers, dict):
            raise StartupRefused(f"{source}: expected an object with a `callers` object")
        return cls({cid: _policy(cid, entry, source) for cid, entry in callers.items()})


def _policy(caller_id: str, entry: object, source: str) -> CallerPolicy:
    where = f"{source}: caller {caller_id!r}"
    if not isinstance(entry, dict):
        raise StartupRefused(f"{where}: expected an object")
    scopes, networks = entry.get("scopes", []), entry.get("networks")
    pems = entry.get("public_keys", [])
    if not isinstance(pems, list):
        raise StartupRefused(f"{where}: `public_keys` must be a list of PEM texts")
    if "public_key" in entry:
        pems = [entry["public_key"], *pems]
    if not pems:
        raise StartupRefused(f"{where}: `public_key` must be PEM text")
    keys = [_public_key(pem, where) for pem in pems]
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise StartupRefused(f"{where}: `scopes` must be a list of strings")
    unknown = set(scopes) - SCOPES
    if unknown:
        raise StartupRefused(f"{where}: unknown scope {sorted(unknown)[0]!r}")
    if not isinstance(networks, list) or not networks:
        raise StartupRefused(f"{where}: `networks` must be a non-empty list of CIDR networks")
    try:
        nets = tuple(ipaddress.ip_network(str(n), strict=True) for n in networks)
    except ValueError:
        raise StartupRefused(f"{where}: `networks` holds an invalid CIDR network") from None
    return CallerPolicy(caller_id, {key_id(k): k for k in keys}, frozenset(scopes), nets)


def _public_key(pem: object, where: str) -> Ed25519PublicKey:
    if not isinstance(pem, str):
        raise StartupRefused(f"{where}: `public_key` must be PEM text")
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError:
        raise StartupRefused(f"{where}: `public_key` is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise StartupRefused(f"{where}: `public_key` must be Ed25519 (only EdDSA tokens are accepted)")
    return key
