"""The key service: per-user data keys, wrapped under a master key, handed out to authenticated callers.

It runs as its own process (`pulseseal keyservice`) with its own Redis, so that an attacker must break two
isolated systems to read sealed events. `client` is what the encryptor and replay import; everything else
is the service itself. See docs/keyservice.md.
"""
