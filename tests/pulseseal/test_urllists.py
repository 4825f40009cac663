"""URL list settings (pulseseal/urllists.py): `PULSESEAL_KEYSERVICE_URL` as one URL or several replicas."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pulseseal.settings import Settings
from pulseseal.urllists import InvalidUrlList, split_urls
from shell.cli.errors import settings_problem

HTTP = {"http", "https"}


def test_one_url_is_a_list_of_one_and_the_default_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULSESEAL_KEYSERVICE_URL", raising=False)
    assert Settings().keyservice_urls == ("http://127.0.0.1:8700",)
    assert Settings().keyservice_url == "http://127.0.0.1:8700"


def test_a_list_keeps_its_order_and_loses_the_spaces_around_entries() -> None:
    settings = Settings(keyservice_url=" http://127.0.0.1:8701 ,https://ks.example:443/ ")
    assert settings.keyservice_urls == ("http://127.0.0.1:8701", "https://ks.example:443/")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty: give at least one URL"),
        ("http://a:1,,http://b:2", "entry 2 of 3 is empty"),
        ("http://a:1, ftp://b", "entry 2 of 2, 'ftp://b', must start with http:// or https://"),
        ("127.0.0.1:8700", "entry 1 of 1, '127.0.0.1:8700', must start with"),
        ("http://a:99999", "entry 1 of 1, 'http://a:99999', has an invalid port"),
        ("http://:8700", "needs a host"),
        ("http://a:1,http://a:1/", "entry 2 of 2, 'http://a:1/', repeats an earlier entry"),
    ],
)
def test_each_bad_entry_is_named(text: str, message: str) -> None:
    with pytest.raises(InvalidUrlList, match=message.replace("?", r"\?")):
        split_urls(text, setting="PULSESEAL_KEYSERVICE_URL", schemes=HTTP)


def test_a_password_in_a_bad_entry_is_never_repeated() -> None:
    with pytest.raises(InvalidUrlList) as caught:
        split_urls("http://a:1,ftp://user:s3cret@b", setting="X", schemes=HTTP)
    assert "s3cret" not in str(caught.value)
    assert "ftp://user:***@b" in str(caught.value)


def test_settings_refuse_a_bad_list_in_one_line_naming_the_entry() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(keyservice_url="http://127.0.0.1:8700,http//127.0.0.1:8701")
    assert settings_problem(caught.value) == (
        "PULSESEAL_KEYSERVICE_URL entry 2 of 2, 'http//127.0.0.1:8701', must start with http:// or https://; "
        "fix the setting"
    )


def test_another_bad_setting_is_named_without_its_value() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(keyservice_port="not-a-port")  # type: ignore[arg-type]
    problem = settings_problem(caught.value)
    assert problem.startswith("PULSESEAL_KEYSERVICE_PORT: ")
    assert "not-a-port" not in problem
