"""`recsys worker` and `recsys beat`: the Celery processes of the offline path.

Celery is imported inside the commands so that other `recsys` commands start without it.
"""

from __future__ import annotations

from typing import Any

import typer

from cli.context import CliContext, cli_context, fail

DEFAULT_QUEUES = "training,default"


def worker(
    ctx: typer.Context,
    concurrency: int | None = typer.Option(
        None, min=1, help="Pool processes (default RECSYS_WORKER_CONCURRENCY)."
    ),
    queues: str = typer.Option(DEFAULT_QUEUES, help="Comma-separated queues to consume."),
    loglevel: str = typer.Option("info", help="Celery log level."),
    hostname: str | None = typer.Option(
        None, help="Node name, unique per worker (default celery@<host name>)."
    ),
) -> None:
    """Run a Celery worker; each prefork pool process opens its own database pool."""
    context = cli_context(ctx)
    queue_names = _known_queues(queues)
    app = _celery_app(context, with_database=True)
    argv = [
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency or context.settings.worker_concurrency}",
        f"--queues={queue_names}",
        f"--loglevel={loglevel}",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    _run_celery(app, argv)


def beat(
    ctx: typer.Context,
    loglevel: str = typer.Option("info", help="Celery log level."),
) -> None:
    """Run Celery beat on RedBeat: the schedule lives in Redis, editable while beat runs."""
    app = _celery_app(cli_context(ctx), with_database=False)
    _run_celery(app, ["beat", f"--loglevel={loglevel}"])


def _celery_app(context: CliContext, *, with_database: bool) -> Any:
    """The app built from settings with Redis (and the database) resolved and exported."""
    from offline.celery_app import create_celery_app

    updates = {"redis_url": context.redis_url()}
    if with_database:
        updates["database_url"] = context.database_url()
    return create_celery_app(context.settings.model_copy(update=updates))


def _known_queues(queues: str) -> str:
    """The comma-separated queue names, checked against the app's queues."""
    from shared.control.names import QUEUES

    names = [name.strip() for name in queues.split(",") if name.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if unknown or not names:
        raise fail(f"unknown queues {unknown or queues!r}; choose from {', '.join(QUEUES)}", 2)
    return ",".join(names)


def _run_celery(app: Any, argv: list[str]) -> None:
    """Run a `celery` sub-command in this process; its non-zero exit status becomes ours."""
    import click

    try:
        code = app.start(argv)
    except click.ClickException as error:  # Celery's own CLI is plain click
        raise fail(f"celery {argv[0]}: {error.format_message()}", error.exit_code) from None
    if code:
        raise typer.Exit(code)
