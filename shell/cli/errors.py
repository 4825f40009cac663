"""How every `pulseseal` command fails: one clear line and an exit code of docs/contract.md §8."""

from __future__ import annotations

from enum import IntEnum

from pydantic import ValidationError


class ExitCode(IntEnum):
    """Exit codes of docs/contract.md §8."""

    OK = 0
    PARTIAL = 1
    USAGE = 2
    INTEGRITY = 3
    INTERRUPTED = 130  # as shells report SIGINT (128 + 2)


class CliError(Exception):
    """A failure to report as one line on stderr, never a traceback.

    The message must name what is wrong and what to do, and never contain event data, keys or tokens.
    """

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def settings_problem(exc: ValidationError) -> str:
    """One line naming the first setting that does not validate and why — never its value (it may be a
    secret): pydantic's own text would quote the input."""
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if message.startswith("PULSESEAL_"):
        return f"{message}; fix the setting"
    return f"PULSESEAL_{field.upper()}: {message}; fix the setting"
