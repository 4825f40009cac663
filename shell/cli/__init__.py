"""The `pulseseal` command line (docs/contract.md §8).

Each command group lives in its own module and is registered here. Commands raise `CliError` for
expected failures; `main` turns those into one line on stderr and the contract's exit code.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import entry_points

import typer
from pydantic import ValidationError

from shell.cli.errors import CliError, ExitCode, settings_problem

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
    from shell.cli import services

    app.add_typer(services.app, name="services")

    from shell.cli import keys, keyservice

    app.command("keyservice", help="Run the key service (per-user data keys for authenticated callers).")(
        keyservice.run
    )
    app.add_typer(keys.app, name="keys")

    from shell.cli import demo, encryptor, run

    app.command("demo", help="The main job on local defaults, end to end, with everything shown.")(demo.run)

    app.command("encryptor", help="Run an encryptor (queue → keys → seal → MongoDB).")(encryptor.run)
    app.command("run", help="Run the key service, an encryptor and the gateway together (development).")(
        run.run
    )

    from shell.cli import dead, gateway, importer

    app.command("gateway", help="Run the HTTP gateway (POST /v1/events, /healthz, /metrics).")(gateway.run)
    app.command("import", help=importer.HELP)(importer.import_command)
    app.add_typer(dead.app, name="dead")

    from shell.cli import replay, verify

    app.command("replay", help=replay.HELP)(replay.replay_command)
    app.command("verify", help=verify.HELP)(verify.verify_command)

    from shell.cli import soak

    app.command("soak", help=soak.HELP)(soak.soak)

    # Commands of floors above the shell (`pulseseal bench`) plug in through an entry point: the shell
    # never imports them, so the benchmark can stand on the shell without a cycle.
    for plugin in entry_points(group="pulseseal.commands"):
        plugin.load()(app)


def main() -> None:
    """Entry point of the `pulseseal` script."""
    _register()
    try:
        result = app(standalone_mode=False)
        sys.exit(result if isinstance(result, int) else ExitCode.OK)
    except typer.TyperException as exc:
        # Typer ships its own click; its usage errors all derive from TyperException. With no
        # arguments, the help was printed already.
        if type(exc).__name__ != "NoArgsIsHelpError":
            print(f"pulseseal: {exc.format_message()} (see `pulseseal --help`)", file=sys.stderr)
        sys.exit(ExitCode.USAGE)
    except CliError as exc:
        print(f"pulseseal: {exc.message}", file=sys.stderr)
        sys.exit(exc.code)
    except ValidationError as exc:  # a PULSESEAL_* setting that does not validate
        print(f"pulseseal: {settings_problem(exc)}", file=sys.stderr)
        sys.exit(ExitCode.USAGE)
    except (typer.Abort, KeyboardInterrupt):
        print("pulseseal: interrupted", file=sys.stderr)
        sys.exit(ExitCode.INTERRUPTED)
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
