"""`recsys schedule show|list|set|pause|resume`: the retrain and tune schedules, changed while
beat runs.

KIND is `retrain` (the default, so `recsys schedule set --cron ...` keeps its meaning) or
`tune`: a weekly hyper-parameter search next to the daily retrain, e.g.
`recsys schedule set tune --cron "0 3 * * 0" --max-trials 30`.
"""

from __future__ import annotations

from dataclasses import asdict
from enum import StrEnum
from typing import Any

import typer

from cli.context import cli_context, fail, print_json
from cli.tables import print_fields, print_table

app = typer.Typer(
    help="The retrain and tune schedules (kept in Redis by RedBeat).", no_args_is_help=True
)
JSON = typer.Option(False, "--json", help="Print JSON for scripts.")


class Kind(StrEnum):
    retrain = "retrain"
    tune = "tune"


KIND = typer.Argument(Kind.retrain, help="retrain or tune.")


def _celery(ctx: typer.Context) -> Any:
    from shared.control.broker import broker_client

    context = cli_context(ctx)
    return broker_client(context.settings.model_copy(update={"redis_url": context.redis_url()}))


def _show(info: Any, as_json: bool) -> None:
    if as_json:
        print_json(info)
        return
    if info is None:
        typer.echo("no schedule of this kind (set one with `recsys schedule set [tune] --cron`)")
        return
    print_fields(
        [
            ("cron", info.cron),
            ("time zone", info.timezone),
            ("enabled", info.enabled),
            ("next run", info.next_run_at),
            ("last run", info.last_run_at),
            ("runs so far", info.total_run_count),
            *([("options", _options(info.options))] if hasattr(info, "options") else []),
        ]
    )


def _options(options: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items() if v is not None and k != "trigger")


@app.command("show")
def show(ctx: typer.Context, kind: Kind = KIND, as_json: bool = JSON) -> None:
    """A schedule (the retrain's unless KIND is tune) and when it fires next."""
    from shared.control.schedule import retrain_schedule, tune_schedule

    celery = _celery(ctx)
    _show(tune_schedule(celery) if kind is Kind.tune else retrain_schedule(celery), as_json)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Every schedule that is set: the retrain and the tune."""
    from shared.control.schedule import list_schedules

    found = list_schedules(_celery(ctx))
    if as_json:
        print_json([{"kind": kind, **asdict(info)} for kind, info in found.items()])
        return
    print_table(
        ["kind", "cron", "tz", "enabled", "next run", "last run", "runs", "options"],
        [
            [
                kind,
                info.cron,
                info.timezone,
                info.enabled,
                info.next_run_at,
                info.last_run_at,
                info.total_run_count,
                _options(getattr(info, "options", {})),
            ]
            for kind, info in found.items()
        ],
    )


@app.command("set")
def set_(
    ctx: typer.Context,
    kind: Kind = KIND,
    cron: str = typer.Option(..., "--cron", help="'minute hour day month weekday'"),
    tz: str = typer.Option("UTC", "--tz", help="IANA time zone of the cron expression."),
    max_trials: int | None = typer.Option(None, "--max-trials", min=1, help="tune: trials."),
    max_cost: float | None = typer.Option(None, "--max-cost", help="tune: money budget."),
    metric: str = typer.Option("ndcg", "--metric", help="tune: ndcg, map, precision, recall."),
    algorithm: str = typer.Option(
        "als", "--algorithm", help="tune: als, bpr, item_knn, ease or popularity."
    ),
    apply: bool = typer.Option(True, "--apply/--no-apply", help="tune: adopt better settings."),
    as_json: bool = JSON,
) -> None:
    """Retrain (or tune) on a cron schedule, e.g. --cron '0 3 * * *' --tz Europe/Berlin."""
    from shared.control.schedule import ScheduleError, set_retrain_schedule, set_tune_schedule

    celery = _celery(ctx)
    try:
        if kind is Kind.tune:
            from offline.tuning_space import SearchSpace, check_budgets

            check_budgets(max_trials, max_cost, metric)
            SearchSpace.default(algorithm)  # raises on an unknown algorithm
            info: Any = set_tune_schedule(
                celery,
                cron=cron,
                timezone=tz,
                max_trials=max_trials,
                max_cost=max_cost,
                metric=metric,
                algorithm=algorithm,
                apply=apply,
            )
        elif max_trials or max_cost or metric != "ndcg" or algorithm != "als" or not apply:
            raise fail("--max-trials, --max-cost, --metric, --algorithm, --no-apply: tune only", 2)
        else:
            info = set_retrain_schedule(celery, cron=cron, timezone=tz)
    except (ScheduleError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    _show(info, as_json)


@app.command("pause")
def pause(ctx: typer.Context, kind: Kind = KIND, as_json: bool = JSON) -> None:
    """Stop scheduled retrains or tunes (the schedule is kept)."""
    _toggle(ctx, kind, False, as_json)


@app.command("resume")
def resume(ctx: typer.Context, kind: Kind = KIND, as_json: bool = JSON) -> None:
    """Resume scheduled retrains or tunes."""
    _toggle(ctx, kind, True, as_json)


def _toggle(ctx: typer.Context, kind: Kind, enabled: bool, as_json: bool) -> None:
    from shared.control.schedule import ScheduleError, set_enabled

    try:
        info = set_enabled(_celery(ctx), enabled, kind.value)
    except ScheduleError as exc:
        raise fail(str(exc)) from None
    _show(info, as_json)
