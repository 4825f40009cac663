"""Settings that hold or point at secrets: the master key never printed, URLs redacted at the right `@`,
and `pulseseal run` keeping the key service's secrets from the other components."""

from __future__ import annotations

import pytest

from pulseseal.settings import Settings, redact_url
from shell.cli.run import child_env

MASTER = "q" * 43 + "="
FILE_VARIABLE = "PULSESEAL_KEYSTORE_REDIS_" + "PASSWORD_FILE"  # split: a variable name, not a secret


def test_the_master_key_never_appears_in_a_repr_or_dump() -> None:
    settings = Settings(master_key=MASTER)  # type: ignore[arg-type]  # pydantic converts str to SecretStr
    assert MASTER not in repr(settings)
    assert MASTER not in str(settings.model_dump())
    assert settings.master_key is not None
    assert settings.master_key.get_secret_value() == MASTER


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:p@ss@word@127.0.0.1:6380/0", "redis://:***@127.0.0.1:6380/0"),
        ("amqp://guest:a@b@rabbit:5672/v@host", "amqp://guest:***@rabbit:5672/v@host"),
        ("mongodb://user:pw@db/?x=@", "mongodb://user:***@db/?x=@"),
        ("redis://127.0.0.1:6380/0", "redis://127.0.0.1:6380/0"),
    ],
)
def test_redact_url_splits_the_userinfo_at_the_last_at_sign(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert "ss@word" not in redact_url(url)


def test_run_gives_the_master_key_and_key_store_to_the_key_service_only() -> None:
    environ = {
        "PULSESEAL_MASTER_KEY": MASTER,
        "PULSESEAL_KEYSTORE_REDIS_URL": "redis://:pw@127.0.0.1:6380/0",
        FILE_VARIABLE: "/run/secrets/redis",
        "PULSESEAL_AMQP_URL": "amqp://x",
        "PATH": "/bin",
    }
    assert child_env("keyservice", environ) == environ
    for name in ("encryptor", "gateway"):
        assert child_env(name, environ) == {"PULSESEAL_AMQP_URL": "amqp://x", "PATH": "/bin"}
