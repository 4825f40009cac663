"""`pulseseal services up|down|status [SERVICE...]`: the local RabbitMQ, key-store Redis and MongoDB."""

from __future__ import annotations

from typing import Annotated

import typer

from pulseseal.settings import load_settings
from shell import credentials
from shell import devservices as services
from shell.cli.errors import CliError, ExitCode
from shell.devservices import Action, Service

app = typer.Typer(
    help="Start, stop and report the local RabbitMQ, key-store Redis (AOF, port 6380) and MongoDB-compatible "
    "server (FerretDB). Data and logs live under PULSESEAL_HOME.",
    no_args_is_help=True,
)

Names = Annotated[
    list[str] | None,
    typer.Argument(help="Which servers: rabbitmq, redis, mongo (default: all three).", show_default=False),
]


def _services(names: list[str] | None) -> list[Service]:
    # Checked here rather than by an Enum-typed argument so a typo is one of our one-line errors.
    try:
        return [Service(name) for name in names or []]
    except ValueError:
        unknown = next(n for n in names or [] if n not in set(Service))
        raise CliError(
            f"unknown service {unknown!r} — choose from {', '.join(Service)} (or none for all three)"
        ) from None


def _run(action: Action, names: list[str] | None, rabbitmq_nodes: int | None = None) -> None:
    chosen = _services(names)
    try:
        services.run(action, chosen, load_settings(), rabbitmq_nodes=rabbitmq_nodes)
    except services.ServicesError as exc:
        # `status` exits 1 when some server is not ready (a partial answer); other failures are 2.
        code = ExitCode.PARTIAL if action == "status" and exc.returncode == 1 else ExitCode.USAGE
        raise CliError(exc.message, code) from None


@app.command()
def up(
    names: Names = None,
    rabbitmq_nodes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="RabbitMQ nodes: 3 starts a cluster on PULSESEAL_RABBITMQ_PORT and the two ports after it "
            "(default: as many as this home has, one for a new home).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create missing dev credentials, then start the servers (or accept ones already answering)."""
    _services(names)  # a typo fails before anything is created
    settings = load_settings()
    try:
        report = credentials.ensure_dev_credentials(settings.credentials_dir)
    except credentials.CredentialsError as exc:
        raise CliError(f"{exc} — fix the directory's permissions or set PULSESEAL_HOME") from None
    if report.created:
        print(f"credentials: created {', '.join(report.created)} in {report.directory}")
    else:
        print(f"credentials: present in {report.directory}")
    for warning in report.warnings:
        print(f"credentials: warning: {warning}")
    _run("up", names, rabbitmq_nodes)


@app.command()
def down(names: Names = None) -> None:
    """Stop the servers that `up` started (SIGTERM, then SIGKILL after 30 s); others are left alone."""
    _run("down", names)


@app.command()
def status(names: Names = None) -> None:
    """Show each server: ready or not, port, pid, data directory; exit 1 if any is not ready."""
    _run("status", names)
