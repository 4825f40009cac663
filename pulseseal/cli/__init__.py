"""The `pulseseal` command line (contract §8).

Each command group lives in its own module and is registered here. Commands raise `CliError` for
expected failures; `main` turns those into one line on stderr and the contract's exit code.
"""

from __future__ import annotations

import os
import sys

import click
import typer

from pulseseal.cli.errors import CliError, ExitCode

app = typer.Typer(
    name="pulseseal",
    help="PulseSeal: seal personal health events with per-user keys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Imported here so that `pulseseal --help` does not pay for every component's imports twice and
    # so that the command modules can import `app`-free helpers without cycles.
    from pulseseal.cli import services

    app.add_typer(services.app, name="services")


def main() -> None:
    """Entry point of the `pulseseal` script."""
    _register()
    try:
        result = app(standalone_mode=False)
        sys.exit(result if isinstance(result, int) else ExitCode.OK)
    except click.exceptions.NoArgsIsHelpError as exc:
        print(exc.format_message(), file=sys.stderr)
        sys.exit(ExitCode.USAGE)
    except click.ClickException as exc:
        print(f"pulseseal: {exc.format_message()}", file=sys.stderr)
        sys.exit(ExitCode.USAGE)
    except CliError as exc:
        print(f"pulseseal: {exc.message}", file=sys.stderr)
        sys.exit(exc.code)
    except (typer.Abort, KeyboardInterrupt):
        print("pulseseal: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # last line of defence: one line, no traceback, no data
        if os.environ.get("PULSESEAL_DEBUG") == "1":
            raise
        print(
            f"pulseseal: unexpected {type(exc).__name__}; run with PULSESEAL_DEBUG=1 for details",
            file=sys.stderr,
        )
        sys.exit(ExitCode.USAGE)
