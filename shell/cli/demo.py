"""`pulseseal demo`: the main job on local defaults (docs/contract.md §8)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from pulseseal.settings import load_settings
from shell.demo.main import DemoOptions, run_demo


def run(
    users: Annotated[int, typer.Option(min=2, help="Synthetic users.")] = 300,
    events_per_user: Annotated[int, typer.Option(min=1, help="Events each user sends.")] = 100,
    per_request: Annotated[int, typer.Option(min=1, max=1000, help="Events per gateway request.")] = 100,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 16,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible traffic.")] = None,
) -> None:
    """Services up, pipeline running, synthetic wearable traffic through the gateway, then a summary, an
    audit replay and a crypto-shred, all shown."""
    options = DemoOptions(
        users=users,
        events_per_user=events_per_user,
        per_request=per_request,
        concurrency=concurrency,
        seed=seed,
    )
    run_demo(load_settings(), options, Console(highlight=False))
