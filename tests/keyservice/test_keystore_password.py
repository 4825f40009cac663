"""The key-store Redis behind a password (contract §2): the real server refuses whoever does not
authenticate, and the key service authenticates with the password file unless its URL carries one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError

from keyservice.bootstrap import ServiceOptions, keystore_redis_password, open_service
from keyservice.wire.errors import StartupRefused
from pulseseal.settings import Settings

pytestmark = pytest.mark.integration


async def test_the_key_store_refuses_a_client_without_the_password(
    settings: Settings, keystore_redis_url: str
) -> None:
    anonymous = Redis.from_url(settings.keystore_redis_url)  # the plain URL: no password in it
    try:
        with pytest.raises(AuthenticationError):
            await anonymous.ping()
        with pytest.raises(AuthenticationError):
            await anonymous.xadd("pulseseal-test:forged-audit", {b"r": b"{}"})
    finally:
        await anonymous.aclose()


async def test_the_key_service_refuses_to_start_with_a_wrong_password(
    options: ServiceOptions, settings: Settings
) -> None:
    plain = replace(options, redis_url=settings.keystore_redis_url, redis_password="not-the-password")  # nosec B106  # a wrong password on purpose
    with pytest.raises(StartupRefused, match="refused our password"):
        await open_service(plain)
    with pytest.raises(StartupRefused, match="refused our password"):
        await open_service(replace(plain, redis_password=None))


async def test_the_key_service_authenticates_with_the_password_file(
    options: ServiceOptions, settings: Settings
) -> None:
    plain = replace(
        options, redis_url=settings.keystore_redis_url, redis_password=keystore_redis_password(settings)
    )
    service = await open_service(plain)
    try:
        assert (await service.health())[0]
    finally:
        await service.close()


def test_the_password_comes_from_the_file_unless_the_url_has_one(tmp_path: Path) -> None:
    password_file = tmp_path / "keystore-redis.password"
    base = Settings(home=tmp_path, keystore_redis_password_file=password_file)
    assert keystore_redis_password(base) is None  # no file: the server will say NOAUTH if it needs one
    password_file.write_text("  s3cret-Pass  \n")
    password_file.chmod(0o600)
    assert keystore_redis_password(base) == "s3cret-Pass"
    with_url = base.model_copy(update={"keystore_redis_url": "redis://:inurl@127.0.0.1:6380/0"})
    assert keystore_redis_password(with_url) is None
    password_file.chmod(0o644)
    with pytest.raises(StartupRefused, match="chmod 600"):
        keystore_redis_password(base)
