"""What every CLI command shares: settings read once, the database URL resolved once."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson
import typer

from shared.db import resolve_database_url
from shared.redis_url import resolve_redis_url
from shared.settings import Settings


@dataclass
class CliContext:
    settings: Settings = field(default_factory=Settings)
    _database_url: str | None = None
    _redis_url: str | None = None

    def database_url(self) -> str:
        """The configured database, or the embedded one (started on first use).

        The URL is also exported to RECSYS_DATABASE_URL so that processes this command
        starts (API workers, Celery workers) find the same server.
        """
        if self._database_url is None:
            self._database_url = resolve_database_url(self.settings)
            os.environ["RECSYS_DATABASE_URL"] = self._database_url
        return self._database_url

    def redis_url(self) -> str:
        """The configured Redis, or the embedded one (started on first use).

        Exported to RECSYS_REDIS_URL, like the database URL, for the processes this starts.
        """
        if self._redis_url is None:
            self._redis_url = resolve_redis_url(self.settings)
            os.environ["RECSYS_REDIS_URL"] = self._redis_url
        return self._redis_url


def cli_context(ctx: typer.Context) -> CliContext:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = CliContext()
    context: CliContext = root.obj
    return context


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a clear error on stderr; raise the returned Exit."""
    typer.echo(f"recsys: error: {message}", err=True)
    return typer.Exit(code)
