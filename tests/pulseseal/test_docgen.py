"""The README's settings table is generated from `Settings` and must be current."""

from __future__ import annotations

import pytest

from pulseseal.docgen import ROOT, render_readme, settings_table
from pulseseal.settings import Settings


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
