"""The generated documents (README settings table, JSON Schema, OpenAPI, AsyncAPI) are current and sound."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.messages import INVALID_EVENT, INVALID_MESSAGE, USER_SHREDDED
from keyservice.openapi import openapi_document
from pulseseal.settings import Settings
from pulseseal.topology import DEAD_EXCHANGE, JSON, NDJSON, SEAL_QUEUE
from shell.docgen import (
    ROOT,
    asyncapi_document,
    gateway_openapi,
    generated_documents,
    main,
    render_json,
    render_readme,
    settings_table,
    stale_documents,
)

JSON_DOCUMENTS = [name for name in generated_documents() if name.endswith(".json")]


def test_the_committed_generated_documents_are_current() -> None:
    assert list(stale_documents()) == [], "run `make docs`"


def test_the_committed_readme_table_is_current() -> None:
    text = (ROOT / "README.md").read_text()
    assert render_readme(text) == text, "run `make docs`"


def test_every_setting_has_a_row_and_a_description() -> None:
    table = settings_table()
    for name, field in Settings.model_fields.items():
        assert f"`PULSESEAL_{name.upper()}`" in table
        assert field.description, f"setting {name} needs a description for the README"


def test_missing_markers_are_an_error() -> None:
    with pytest.raises(ValueError, match="markers"):
        render_readme("# no markers here\n")


def test_the_documents_do_not_depend_on_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = {name: render("") for name, render in generated_documents().items() if name in JSON_DOCUMENTS}
    monkeypatch.setenv("PULSESEAL_AMQP_URL", "amqp://someone:secret@rabbit.example:5671/prod")
    monkeypatch.setenv("PULSESEAL_PREFETCH", "7")
    monkeypatch.setenv("PULSESEAL_GATEWAY_JWT_AUDIENCE", "elsewhere")
    after = {name: render("") for name, render in generated_documents().items() if name in JSON_DOCUMENTS}
    assert after == before


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A tree with the committed README only: every JSON document is missing."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def test_check_names_every_stale_document_and_changes_nothing(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--check"], root=checkout) == 1
    err = capsys.readouterr().err
    for name in JSON_DOCUMENTS:
        assert f"{name} is stale: run `make docs`" in err
        assert not (checkout / name).exists()


def test_regenerating_writes_what_check_then_accepts(checkout: Path) -> None:
    (checkout / "docs" / "openapi").mkdir(parents=True)
    (checkout / "docs" / "openapi" / "gateway.json").write_text("{}\n")
    assert main([], root=checkout) == 0
    assert main(["--check"], root=checkout) == 0
    for name in JSON_DOCUMENTS:
        assert (checkout / name).read_text(encoding="utf-8") == (ROOT / name).read_text(encoding="utf-8")


def test_json_documents_are_stable_text() -> None:
    for name, render in generated_documents().items():
        if name in JSON_DOCUMENTS:
            text = render("")
            assert text == render(""), name
            assert text.endswith("}\n"), name
            assert not text.endswith("\n\n"), name
            assert render_json(json.loads(text)) == text, name


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@pytest.mark.parametrize("name", JSON_DOCUMENTS)
def test_every_reference_resolves(name: str) -> None:
    document = json.loads((ROOT / name).read_text(encoding="utf-8"))
    refs = set(_refs(document))
    for ref in refs:
        _resolve(document, ref)


def test_the_keyservice_document_is_the_one_it_serves() -> None:
    assert json.loads((ROOT / "docs/openapi/keyservice.json").read_text()) == openapi_document()


def test_the_gateway_document_describes_post_events() -> None:
    document = gateway_openapi()
    operation = document["paths"]["/v1/events"]["post"]
    assert set(operation["requestBody"]["content"]) == {JSON, NDJSON}
    assert {"202", "401", "403", "413", "422", "503"} <= set(operation["responses"])
    assert "HealthEvent" in document["components"]["schemas"]


def test_asyncapi_describes_the_seal_queue_and_its_two_message_forms() -> None:
    document = asyncapi_document()
    assert document["asyncapi"].startswith("3.")
    channel = document["channels"][SEAL_QUEUE]
    assert channel["address"] == SEAL_QUEUE
    assert "pulseseal.events" in channel["description"]
    assert document["operations"][SEAL_QUEUE]["action"] == "receive"
    messages = document["components"]["messages"]
    assert {messages[name]["contentType"] for name in channel["messages"]} == {JSON, NDJSON}
    for name in channel["messages"]:
        assert messages[name]["headers"]["required"] == ["x-pulseseal-transport", "x-pulseseal-transport-key"]
        assert messages[name]["headers"]["properties"]["x-pulseseal-transport"]["const"] == "hpke-v1"
    event = document["components"]["schemas"]["HealthEvent"]
    assert event["discriminator"] == "type"
    assert len(event["oneOf"]) == 6


def test_asyncapi_describes_the_dead_letters_and_their_headers() -> None:
    document = asyncapi_document()
    channel = document["channels"][DEAD_EXCHANGE]
    assert channel["bindings"]["amqp"]["exchange"]["type"] == "fanout"
    assert document["operations"][DEAD_EXCHANGE]["action"] == "send"
    (message_ref,) = channel["messages"].values()
    headers = _resolve(document, message_ref["$ref"])["headers"]
    assert headers["required"] == [
        "x-pulseseal-error",
        "x-pulseseal-reason",
        "x-pulseseal-transport",
        "x-pulseseal-transport-key",
    ]
    assert set(headers["properties"]["x-pulseseal-error"]["enum"]) == {
        INVALID_EVENT,
        INVALID_MESSAGE,
        USER_SHREDDED,
        "unsealed_transport",
        "transport_unopenable",
    }


def test_asyncapi_names_no_credentials() -> None:
    text = render_json(asyncapi_document())
    assert "guest" not in text
