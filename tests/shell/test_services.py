"""shell.devservices: finding the infra scripts and the environment they run with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pulseseal.settings import Settings
from shell.devservices import Service, infra_dir, script_env

REPO = Path(__file__).resolve().parents[2]


def test_infra_dir_is_the_checkouts_in_an_editable_install() -> None:
    assert infra_dir() == REPO / "infra"
    assert {f"{service}.sh" for service in Service} <= {p.name for p in infra_dir().iterdir()}


def test_scripts_get_an_absolute_home_and_our_python() -> None:
    settings = Settings(home=Path("relative-home"))

    env = script_env(settings, base={"PATH": "/usr/bin", "PULSESEAL_HOME": "elsewhere"})

    assert env["PULSESEAL_HOME"] == str(Path.cwd() / "relative-home")
    assert env["PULSESEAL_PYTHON"] == sys.executable
    assert env["PATH"] == "/usr/bin"


def test_probe_reports_nothing_listening_with_status_1() -> None:
    result = subprocess.run(
        [sys.executable, str(infra_dir() / "probe.py"), "mongo", "127.0.0.1", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 1
    assert result.stdout == "nothing is listening\n"
