"""`recsys tune run|show|list`: search hyper-parameters on the time-split holdout.

`run` searches here (or on a worker with `--queue`) within a budget of trials or money, and
adopts the best settings when they beat those in force; `show` follows a search while it runs.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import typer

from cli.context import CliContext, cli_context, fail, print_json
from cli.tables import print_fields, print_table

app = typer.Typer(help="Hyper-parameter searches (Optuna).", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print JSON for scripts.")


@app.command("run")
def run(
    ctx: typer.Context,
    max_trials: int | None = typer.Option(None, "--max-trials", min=1, help="Stop after N."),
    max_cost: float | None = typer.Option(
        None, "--max-cost", help="Stop once the metered cost passes this (cost_currency)."
    ),
    metric: str = typer.Option("ndcg", "--metric", help="ndcg, map, precision or recall."),
    algorithm: str = typer.Option(
        "als", "--algorithm", help="als, bpr, item_knn, ease or popularity."
    ),
    apply: bool = typer.Option(
        True, "--apply/--no-apply", help="Adopt the best settings if they beat those in force."
    ),
    queue: bool = typer.Option(False, "--queue", help="Send it to a worker instead."),
    as_json: bool = JSON,
) -> None:
    """Search within a budget (--max-trials, --max-cost or both), e.g. --max-trials 30."""
    from offline.tuning_space import SearchSpace, check_budgets

    context = cli_context(ctx)
    options: dict[str, Any] = {
        "max_trials": max_trials,
        "max_cost": max_cost,
        "metric": metric,
        "algorithm": algorithm,
        "apply": apply,
    }
    try:
        check_budgets(max_trials, max_cost, metric)
        SearchSpace.default(algorithm)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if queue:
        _send(context, options, as_json)
        return
    _run_inline(context, options, as_json)


def _run_inline(context: CliContext, options: dict[str, Any], as_json: bool) -> None:
    from offline.tuning import run_tuning

    settings = context.settings.model_copy(update={"database_url": context.database_url()})
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        try:
            result = run_tuning(
                conn,
                settings,
                trigger="cli",
                on_trial=None if as_json else _print_trial,
                **options,
            )
        except ValueError as exc:
            raise fail(str(exc), 2) from None
    if as_json:
        print_json(result.to_dict())
    else:
        _print_outcome(result.to_dict())
    if result.status == "failed":
        raise typer.Exit(1)


def _send(context: CliContext, options: dict[str, Any], as_json: bool) -> None:
    from shared.control.broker import broker_client
    from shared.control.names import TRAINING_QUEUE, TUNE

    settings = context.settings.model_copy(
        update={"database_url": context.database_url(), "redis_url": context.redis_url()}
    )
    sent = broker_client(settings).send_task(
        TUNE, kwargs={**options, "trigger": "cli"}, queue=TRAINING_QUEUE
    )
    if as_json:
        print_json({"task_id": sent.id, "queued": True, **options})
    else:
        typer.echo(f"tune queued (task {sent.id}); `recsys tune show` follows it once it starts")


@app.command("show")
def show(
    ctx: typer.Context,
    tuning: str | None = typer.Argument(None, help="A search id or its first characters."),
    as_json: bool = JSON,
) -> None:
    """One search (the newest by default) with its trials."""
    from offline.tuning_store import find_tuning

    with psycopg.connect(cli_context(ctx).database_url()) as conn:
        found = find_tuning(conn, tuning)
    if found is None:
        raise fail(f"no single tuning run matches {tuning!r}" if tuning else "no tuning run yet")
    if as_json:
        print_json(found)
        return
    print_fields(
        [
            ("tuning", found.tuning_id),
            ("status", found.status),
            ("trigger", found.trigger),
            ("started", found.started_at),
            ("finished", found.finished_at),
            ("metric", found.metric),
            ("budget", _budget(found.max_trials, found.max_cost, found.currency)),
            ("cpu seconds", found.cpu_seconds),
            ("cost", None if found.cost is None else f"{found.cost:.6g} {found.currency}"),
            ("best", found.best_value),
            ("best params", _params(found.best_params or {})),
            ("applied", found.applied),
            ("stopped" if found.status == "over_budget" else "error", found.error),
        ]
    )
    print_table(["trial", "state", found.metric, "cpu s", "params"], _trial_rows(found.trials))


@app.command("list")
def list_(ctx: typer.Context, limit: int = typer.Option(20, min=1), as_json: bool = JSON) -> None:
    """The latest searches."""
    from offline.tuning_store import list_tunings

    with psycopg.connect(cli_context(ctx).database_url()) as conn:
        found = list_tunings(conn, limit=limit)
    if as_json:
        print_json(found)
        return
    print_table(
        ["tuning", "status", "trigger", "started", "trials", "best", "applied"],
        [_list_row(t) for t in found],
    )


def _list_row(t: Any) -> list[Any]:
    best = t.best_value
    return [str(t.tuning_id)[:8], t.status, t.trigger, t.started_at, len(t.trials), best, t.applied]


def _print_trial(trial: dict[str, Any]) -> None:
    value = "-" if trial["value"] is None else f"{trial['value']:.4f}"
    mark = " (settings in force)" if trial["reference"] else ""
    typer.echo(f"  trial {trial['number']:>3}  {value}  {_params(trial['params'])}{mark}")


def _print_outcome(result: dict[str, Any]) -> None:
    tuning_id = uuid.UUID(result["tuning_id"])
    typer.echo(f"tuning {tuning_id}: {result['status']}")
    best, reference = result["best"], result["reference"]
    if best is not None and reference is not None:
        typer.echo(
            f"  best {result['metric']} {best['value']:.4f} (trial {best['number']}) vs "
            f"{reference['value']:.4f} for the settings in force ({result['improvement']:+.4f})"
        )
    typer.echo("  applied" if result["applied"] else "  not applied")
    if result["reason"]:
        typer.echo(f"  {result['reason']}")


def _trial_rows(trials: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            t["number"],
            t["state"] + (" *" if t.get("reference") else ""),
            t.get("value"),
            t.get("cpu_seconds"),
            _params(t["params"]),
        ]
        for t in trials
    ]


def _params(params: dict[str, Any]) -> str:
    shown = [f"{k}={_plain(v)}" for k, v in params.items() if k != "algorithm" and v is not None]
    return " ".join([params.get("algorithm", ""), *shown]).strip()


def _budget(max_trials: int | None, max_cost: float | None, currency: str | None) -> str:
    parts = [f"{max_trials} trials"] if max_trials else []
    if max_cost:
        parts.append(f"{max_cost:g} {currency or ''}".strip())
    return ", ".join(parts)


def _plain(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
