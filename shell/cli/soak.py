"""`pulseseal soak [--duration S] [--seed N] [--rate EPS]`: traffic under faults, then proof of no loss."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from pulseseal.settings import load_settings
from shell.cli.errors import CliError, ExitCode

HELP = """Soak test: steady gateway and importer traffic while a seeded fault schedule
kills encryptors, restarts RabbitMQ, pauses and restarts the MongoDB-compatible
server, restarts the key service and the key-store Redis (also kill -9); with
--keyservice-replicas 2 or more, also kills a key-service replica (kill -9) and
starts it again; with --rabbitmq-nodes 3, on a RabbitMQ cluster, also kills (-9)
the node leading pulseseal.seal and restarts it once the pipeline has recovered
(each recovery must stay within 30 s).

\b
Runs its own servers on spare ports under PULSESEAL_HOME/soak/ (never the ones
`pulseseal services` manages), prints the schedule before it starts, and at the
end: events accepted/stored/rejected/duplicated, the longest recovery per fault,
a key-store backup/shred/restore drill, and canaries found per place on disk.
Exit 0 when nothing was lost, 3 on any loss or mismatch, 2 if it could not run.
"""


def soak(
    duration: Annotated[float, typer.Option(min=10, help="Seconds of traffic (faults may extend it).")] = 600,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the fault schedule and traffic (default random).")
    ] = None,
    rate: Annotated[
        float, typer.Option(min=1, help="Events a second offered (3/4 gateway, 1/4 importer).")
    ] = 200,
    encryptors: Annotated[int, typer.Option(min=1, max=8, help="Encryptor processes.")] = 2,
    keyservice_replicas: Annotated[
        int,
        typer.Option(
            "--keyservice-replicas",
            min=1,
            max=4,
            help="Key-service replicas on one key store; 2 or more adds the fault: SIGKILL a replica, restart it.",
        ),
    ] = 1,
    rabbitmq_nodes: Annotated[
        int,
        typer.Option(
            "--rabbitmq-nodes",
            min=1,
            max=5,
            help="RabbitMQ nodes; 3 runs a cluster and adds the fault: kill -9 the node leading pulseseal.seal.",
        ),
    ] = 1,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the servers' data directories afterwards.")
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
) -> int:
    """Run the soak (see HELP)."""
    # Imported here: every `pulseseal` command registers this one, and the soak needs the broker,
    # database and HTTP clients that most commands never load.
    from shell.soak.run import SoakOptions, run_soak
    from shell.soak.servers import SoakSetupError

    settings = load_settings()
    options = SoakOptions(
        duration_s=duration,
        seed=seed,
        rate=rate,
        encryptors=encryptors,
        keyservice_replicas=keyservice_replicas,
        keep=keep,
        rabbitmq_nodes=rabbitmq_nodes,
    )
    try:
        report = asyncio.run(run_soak(options, settings.home_dir / "soak"))
    except SoakSetupError as exc:
        raise CliError(f"soak could not run: {exc}") from None
    for line in report.lines():
        print(line)
    if json_out is not None:
        json_out.write_text(report.to_json())
    return ExitCode.OK if report.passed else ExitCode.INTEGRITY
