"""The producers' key service (a real process on the session's key prefix), for the gateway's attack tests:
the gateway fetches the transport public key from it (registered here by importing it)."""

from tests.producers.conftest import keyservice

__all__ = ["keyservice"]
