"""`PULSESEAL_AMQP_URL` as a list: how it splits, what it refuses, and that no password is ever repeated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pulseseal.amqp_urls import AmqpUrlInvalid, redact_urls, split_urls
from pulseseal.settings import Settings, redact_url


def test_one_url_is_a_list_of_one() -> None:
    assert split_urls("amqp://guest:guest@127.0.0.1:5672/") == ["amqp://guest:guest@127.0.0.1:5672/"]


def test_commas_separate_urls_in_order_and_spaces_around_them_are_dropped() -> None:
    value = "amqp://u:p@127.0.0.1:5672/v , amqps://u:p@127.0.0.1:5673/v,amqp://u:p@127.0.0.1:5674/v"
    assert split_urls(value) == [
        "amqp://u:p@127.0.0.1:5672/v",
        "amqps://u:p@127.0.0.1:5673/v",
        "amqp://u:p@127.0.0.1:5674/v",
    ]


def test_a_comma_inside_a_password_does_not_split() -> None:
    assert split_urls("amqp://u:pa,ss@h:5672/,amqp://u:pa,ss@h:5673/") == [
        "amqp://u:pa,ss@h:5672/",
        "amqp://u:pa,ss@h:5673/",
    ]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "no RabbitMQ URL"),
        ("amqp://u:s3cret@h:5672/,http://u:s3cret@h:15672/", "URL 2 of 2 must start with amqp://"),
        ("amqp://u:s3cret@h:5672/,amqp://u:s3cret@h:notaport/", "URL 2 of 2 has a malformed port"),
        ("amqp://u:s3cret@:5672/", "URL 1 of 1 has no host"),
    ],
)
def test_a_bad_url_is_refused_by_position_without_its_password(value: str, says: str) -> None:
    with pytest.raises(AmqpUrlInvalid) as refused:
        split_urls(value)
    assert says in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_settings_refuse_a_bad_list_without_repeating_the_password() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(amqp_url="amqp://u:s3cret@h:5672/,ftp://u:s3cret@h/")
    assert "URL 2 of 2" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_settings_keep_the_string_and_give_the_list() -> None:
    settings = Settings(amqp_url="amqp://u:p@h:5672/, amqp://u:p@h:5673/")
    assert settings.amqp_url == "amqp://u:p@h:5672/, amqp://u:p@h:5673/"
    assert settings.amqp_urls == ["amqp://u:p@h:5672/", "amqp://u:p@h:5673/"]


def test_every_password_of_a_list_is_redacted() -> None:
    value = "amqp://u:first@h:5672/v,amqp://u:sec,ond@h:5673/v"
    for redacted in (redact_urls(value), redact_url(value)):
        assert redacted == "amqp://u:***@h:5672/v,amqp://u:***@h:5673/v"


def test_redacting_one_url_is_unchanged_by_list_support() -> None:
    assert redact_url("mongodb://u:p,w@h1:27017,h2:27017/") == "mongodb://u:***@h1:27017,h2:27017/"
    assert redact_url("amqp://u:p@w@h:5672/") == "amqp://u:***@h:5672/"
