"""The one way `pulseseal keys` commands reach the key service: an admin client, one line on failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from keyservice.client import KeyServiceClient
from keyservice.wire.errors import KeyServiceError, KeyServiceUnavailable
from pulseseal.settings import load_settings
from shell.cli.errors import CliError

T = TypeVar("T")


def call_as_admin(key_file: Path | None, action: str, use: Callable[[KeyServiceClient], Awaitable[T]]) -> T:
    """Run `use` with an admin client of the key service; its failures become one `CliError` line.

    Raises:
        CliError: the key service is not reachable, or refused the request.
    """
    settings = load_settings()
    if key_file is not None:
        settings = settings.model_copy(update={"caller_key_file": key_file})

    async def go() -> T:
        async with KeyServiceClient.from_settings(settings, role="admin", retries=1) as client:
            return await use(client)

    try:
        return asyncio.run(go())
    except KeyServiceUnavailable:
        raise CliError(
            f"{action} failed: key service at {settings.keyservice_url} not reachable; start it with "
            "`pulseseal keyservice`"
        ) from None
    except KeyServiceError as exc:
        raise CliError(f"{action} failed: {exc.detail}") from None
