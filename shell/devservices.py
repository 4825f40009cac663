"""Run the `infra/` service scripts that start, stop and report the local servers.

The scripts do the work (install, start, readiness, stop); this module only finds them — at
`pulseseal/_infra` inside a wheel, or `<checkout>/infra` in an editable install — and runs them with
`PULSESEAL_HOME` made absolute, so every caller (the CLI, `pulseseal demo`, tests) starts the same servers.
Script progress goes straight to our stdout; their stderr is captured, because a failing script ends
with one line saying what is wrong and what to do, which becomes the `ServicesError` message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pulseseal.settings import Settings

Action = Literal["up", "down", "status"]


class Service(StrEnum):
    """The three local servers, by the names the scripts and the CLI use."""

    RABBITMQ = "rabbitmq"
    REDIS = "redis"
    MONGO = "mongo"


class ServicesError(Exception):
    """A service script failed; `message` is its one line, `returncode` its exit status."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.message = message
        self.returncode = returncode


def infra_dir() -> Path:
    """Where the service scripts are.

    Raises:
        ServicesError: Neither the packaged copy nor a checkout's `infra/` exists.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "_infra", here.parent / "infra"):
        if (candidate / "services.sh").is_file():
            return candidate
    raise ServicesError(
        f"the service scripts are missing (looked in {here / '_infra'} and {here.parent / 'infra'}); "
        "reinstall pulseseal",
        2,
    )


def script_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the scripts: ours, with `PULSESEAL_HOME` absolute and our Python for probes."""
    env = dict(os.environ if base is None else base)
    env["PULSESEAL_HOME"] = str(settings.home_dir)
    env["PULSESEAL_PYTHON"] = sys.executable
    env["PULSESEAL_KEYSTORE_REDIS_PASSWORD_FILE"] = str(settings.keystore_redis_password_path)
    env["PULSESEAL_KEYSTORE_REDIS_KEYSERVICE_PASSWORD_FILE"] = str(
        settings.keystore_redis_keyservice_password_path
    )
    env["PULSESEAL_KEYSTORE_REDIS_USERNAME"] = settings.keystore_redis_username
    return env


def run(
    action: Action, services: Sequence[Service], settings: Settings, *, rabbitmq_nodes: int | None = None
) -> None:
    """Run `infra/services.sh ACTION [SERVICE...]`; no services means all three.

    Args:
        action: What to do.
        services: Which servers (none: all).
        settings: Where `PULSESEAL_HOME` is.
        rabbitmq_nodes: For `up`, how many RabbitMQ nodes (3: a cluster on the port and the two after
            it); None keeps as many as the home has (one for a new home). `down` and `status` always
            act on every node the home has.

    Raises:
        ServicesError: The script failed (`up`: a server could not be started or made ready; `status`:
            some server is not ready), with the script's last line on stderr as the message.
    """
    command = ["bash", str(infra_dir() / "services.sh"), action, *(str(s) for s in services)]
    sys.stdout.flush()  # our own lines first: the script writes straight to the same stdout
    try:
        proc = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=script_env(settings)
            | ({"PULSESEAL_RABBITMQ_NODES": str(rabbitmq_nodes)} if rabbitmq_nodes is not None else {}),
            text=True,
            check=False,
        )
    except OSError as exc:
        raise ServicesError(f"cannot run bash for the service scripts: {exc.strerror}", 2) from None
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode != 0:
        message = lines[-1] if lines else f"infra/services.sh {action} failed (exit {proc.returncode})"
        raise ServicesError(message, proc.returncode)
    for line in lines:  # warnings of a successful run still deserve to be seen
        print(line, file=sys.stderr)


class RabbitmqctlFailed(RuntimeError):
    """`rabbitmqctl` exited non-zero; the message has the command and its last line of output."""


def rabbitmqctl(*args: str, env: Mapping[str, str] | None = None, timeout_s: float = 60.0) -> str:
    """`rabbitmqctl ARGS` against the local PulseSeal node on `PULSESEAL_RABBITMQ_PORT` (through
    `infra/rabbitmq.sh ctl`, which finds the node and its cookie), in `env` if given; its stdout.

    Raises:
        RabbitmqctlFailed: it failed (the message holds rabbitmqctl's own words, never event data).
    """
    done = subprocess.run(
        ["bash", str(infra_dir() / "rabbitmq.sh"), "ctl", *args],
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RabbitmqctlFailed(
            f"rabbitmqctl {' '.join(args)} failed: {lines[-1] if lines else done.returncode}"
        )
    return done.stdout
