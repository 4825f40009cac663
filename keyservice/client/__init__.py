"""All a caller of the key service links: the HTTP client, its key cache, caller tokens and the transport
rule. It imports from `keyservice` only this package and `keyservice.wire`, never the server's modules.

    async with KeyServiceClient.from_settings(load_settings(), role="encryptor") as keys:
        grant = await keys.encrypt_keys(["alice", "bob"])
"""

from keyservice.client.api import DecryptKeys, EncryptKeys, KeyServiceClient

__all__ = ["DecryptKeys", "EncryptKeys", "KeyServiceClient"]
