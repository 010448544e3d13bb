"""`recsys serve`: the HTTP API on uvicorn."""

from __future__ import annotations

import typer

from shared.cli.context import cli_context


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Bind address (default RECSYS_HOST)."),
    port: int | None = typer.Option(None, help="Port (default RECSYS_PORT)."),
    workers: int | None = typer.Option(None, help="Worker processes (default RECSYS_WORKERS)."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Serve the HTTP API (uvloop + httptools; each worker opens its own database pool)."""
    import uvicorn

    context = cli_context(ctx)
    context.database_url()  # both resolved and exported before workers start
    context.redis_url()
    settings = context.settings
    uvicorn.run(
        "online.main:app_from_env",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
