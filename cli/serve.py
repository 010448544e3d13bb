"""`recsys serve`: the HTTP API on uvicorn."""

from __future__ import annotations

import os

import typer

from cli.context import cli_context
from cli.metrics_dir import prepare_multiprocess_dir


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
    prepare_multiprocess_dir(settings.data_dir)  # before any worker imports prometheus_client
    _one_blas_thread()
    uvicorn.run(
        "online.main:app_from_env",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        # uvloop sets TCP_NODELAY on every accepted socket; asyncio's loop loses it under
        # --workers N (uvicorn #3149: ~40 ms per keep-alive request; bench/serve.py checks).
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )


def _one_blas_thread() -> None:
    """One BLAS thread per API process unless OPENBLAS_NUM_THREADS says otherwise.

    A request scores one user vector (a matrix-vector product, memory-bound): with a worker
    per core, extra BLAS threads only compete with the other workers for the same cores and
    spend more CPU per request (1 x 64 by 64 x 20,000: 156 us of CPU on one thread, ~200 us
    over two). Spawned workers read the variable when they import numpy; with --workers 1
    the app runs here, where numpy is already loaded.
    """
    from threadpoolctl import threadpool_limits

    threads = os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    threadpool_limits(int(threads), user_api="blas")
