"""`recsys schedule show|set|pause|resume`: the retrain schedule, changed while beat runs."""

from __future__ import annotations

from typing import Any

import typer

from shared.cli.context import cli_context, fail, print_json
from shared.cli.tables import print_fields

app = typer.Typer(help="The retrain schedule (kept in Redis by RedBeat).", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print JSON for scripts.")


def _celery(ctx: typer.Context) -> Any:
    from offline.celery_app import create_celery_app

    context = cli_context(ctx)
    return create_celery_app(context.settings.model_copy(update={"redis_url": context.redis_url()}))


def _show(info: Any, as_json: bool) -> None:
    if as_json:
        print_json(info)
        return
    if info is None:
        typer.echo("no retrain schedule (set one with `recsys schedule set --cron EXPR`)")
        return
    print_fields(
        [
            ("cron", info.cron),
            ("time zone", info.timezone),
            ("enabled", info.enabled),
            ("next run", info.next_run_at),
            ("last run", info.last_run_at),
            ("runs so far", info.total_run_count),
        ]
    )


@app.command("show")
def show(ctx: typer.Context, as_json: bool = JSON) -> None:
    """The retrain schedule and when it fires next."""
    from offline.schedule import retrain_schedule

    _show(retrain_schedule(_celery(ctx)), as_json)


@app.command("set")
def set_(
    ctx: typer.Context,
    cron: str = typer.Option(..., "--cron", help="'minute hour day month weekday'"),
    tz: str = typer.Option("UTC", "--tz", help="IANA time zone of the cron expression."),
    as_json: bool = JSON,
) -> None:
    """Retrain on a cron schedule, e.g. --cron '0 3 * * *' --tz Europe/Berlin."""
    from offline.schedule import ScheduleError, set_retrain_schedule

    try:
        info = set_retrain_schedule(_celery(ctx), cron=cron, timezone=tz)
    except ScheduleError as exc:
        raise fail(str(exc), 2) from None
    _show(info, as_json)


@app.command("pause")
def pause(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Stop scheduled retrains (the schedule is kept)."""
    _toggle(ctx, False, as_json)


@app.command("resume")
def resume(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Resume scheduled retrains."""
    _toggle(ctx, True, as_json)


def _toggle(ctx: typer.Context, enabled: bool, as_json: bool) -> None:
    from offline.schedule import ScheduleError, set_enabled

    try:
        info = set_enabled(_celery(ctx), enabled)
    except ScheduleError as exc:
        raise fail(str(exc)) from None
    _show(info, as_json)
