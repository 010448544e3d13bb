"""`recsys tradeoff ...`: sweep model and serving settings, price them, show, report, apply."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import typer

from cli.context import CliContext, cli_context, fail, print_json
from cli.tables import print_table
from shared import registry
from shared.settings import Settings

if TYPE_CHECKING:
    from offline.tradeoff.store import CandidateRow, TradeoffRun

app = typer.Typer(
    help="Training against serving cost: measure, choose, apply.", no_args_is_help=True
)
JSON = typer.Option(False, "--json", help="Print JSON for scripts.")
INLINE = typer.Option(False, "--inline", help="Run here, without a broker.")


@app.command("run")
def run(
    ctx: typer.Context,
    requests_per_day: float = typer.Option(1_000_000, "--requests-per-day", min=0),
    retrains_per_day: float = typer.Option(1.0, "--retrains-per-day", min=0),
    active_users: int | None = typer.Option(None, "--active-users", min=1, help="Default: all."),
    api_processes: int = typer.Option(2, "--api-processes", min=1, help="Processes kept at least."),
    vcpus_per_process: float | None = typer.Option(
        None,
        "--vcpus-per-process",
        min=0.01,
        help="Fix the API process size; unset: price 0.25, 0.5 and 1 vCPU and take the cheapest.",
    ),
    peak_to_mean: float = typer.Option(3.0, "--peak-to-mean", min=1.0),
    utilization: float = typer.Option(0.6, "--utilization", min=0.01, max=1.0),
    floor: float = typer.Option(0.97, "--floor", min=0.01, max=1.0, help="x the best NDCG."),
    candidates: Path | None = typer.Option(None, "--candidates", exists=True, dir_okay=False),
    strategies: str = typer.Option(
        "exact,precomputed,batched,ann,float16", "--strategies", help="For the default grid."
    ),
    requests: int = typer.Option(2_000, "--requests", min=10, help="Replayed per candidate."),
    inline: bool = INLINE,
    wait: bool = typer.Option(False, "--wait", help="Wait for the workers to finish."),
    apply: bool = typer.Option(False, "--apply", help="Apply the choice and retrain."),
    as_json: bool = JSON,
) -> None:
    """Measure every candidate on the shop's data and choose the cheapest above the floor."""
    from offline.tradeoff import candidates as grid
    from offline.tradeoff.costing import Workload
    from offline.tradeoff.replay import Mix
    from offline.tradeoff.sweep import NoPrice, current_config, run_inline, start_sweep
    from offline.training import gpu_available

    context = cli_context(ctx)
    settings = _settings(context, broker=not inline)
    try:
        workload = Workload(
            requests_per_day, retrains_per_day, active_users, api_processes,
            vcpus_per_process, peak_to_mean, utilization,
        )  # fmt: skip
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        config = current_config(conn, settings)
        try:
            chosen = (
                grid.load_candidates(candidates, config.model, config.serving)
                if candidates
                else grid.default_grid(
                    config.model,
                    config.serving,
                    [s.strip() for s in strategies.split(",")],
                    gpu=gpu_available(),
                )
            )
            run_id = start_sweep(
                conn, settings, workload=workload, floor=floor, candidates=chosen,
                mode="inline" if inline else "celery", mix=Mix(requests=requests),
            )  # fmt: skip
        except (ValueError, NoPrice) as exc:
            raise fail(str(exc), 2) from None
        if inline:
            run_inline(settings, run_id, on_candidate=None if as_json else _print_candidate)
        else:
            _send(settings, conn, run_id)
            if not as_json:
                typer.echo(f"tradeoff run {run_id} queued")
            if not (wait or apply):
                if as_json:
                    print_json({"run_id": run_id, "status": "running"})
                return
            _wait(conn, run_id)
        if apply:
            _apply(conn, settings, run_id, None, inline=inline, as_json=as_json)
            return
        _show(conn, run_id, as_json)


@app.command("apply")
def apply_command(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="The tradeoff run (id or unique prefix)."),
    candidate: int | None = typer.Option(None, "--candidate", help="Default: the chosen one."),
    inline: bool = INLINE,
    as_json: bool = JSON,
) -> None:
    """Store a candidate's settings as the retrain settings and retrain through the gate."""
    context = cli_context(ctx)
    settings = _settings(context, broker=not inline)
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        found = _find(conn, run_id)
        _apply(conn, settings, found.run_id, candidate, inline=inline, as_json=as_json)


@app.command("finish")
def finish(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="The tradeoff run (id or unique prefix)."),
    as_json: bool = JSON,
) -> None:
    """Price and choose among a sweep's measured candidates (after a worker was lost)."""
    from offline.tradeoff.sweep import finish_sweep

    with psycopg.connect(cli_context(ctx).database_url(), autocommit=True) as conn:
        found = _find(conn, run_id)
        finish_sweep(conn, found.run_id)
        _show(conn, found.run_id, as_json)


@app.command("show")
def show(
    ctx: typer.Context,
    run_id: str | None = typer.Argument(None, help="Default: the latest run."),
    as_json: bool = JSON,
) -> None:
    """A sweep's workload, choice and every candidate's figures."""
    with psycopg.connect(cli_context(ctx).database_url(), autocommit=True) as conn:
        found = _find(conn, run_id)
        _show(conn, found.run_id, as_json)


@app.command("list")
def list_command(
    ctx: typer.Context, limit: int = typer.Option(20, min=1), as_json: bool = JSON
) -> None:
    """The latest sweeps."""
    from offline.tradeoff import store

    with psycopg.connect(cli_context(ctx).database_url(), autocommit=True) as conn:
        runs = store.list_runs(conn, limit=limit)
    if as_json:
        print_json(runs)
        return
    print_table(
        ["run", "created", "status", "floor", "chosen", "saving/day", "applied"],
        [
            [str(r.run_id)[:8], r.created_at, r.status, r.floor, r.chosen_candidate,
             r.saving, "yes" if r.applied else ""]
            for r in runs
        ],
    )  # fmt: skip


@app.command("report")
def report(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="The tradeoff run (id or unique prefix)."),
    html: Path = typer.Option(..., "--html", dir_okay=False, help="The HTML file to write."),
) -> None:
    """Write one self-contained HTML page: the frontier plot and every candidate."""
    from offline.tradeoff import report as page
    from offline.tradeoff import store

    with psycopg.connect(cli_context(ctx).database_url(), autocommit=True) as conn:
        found = _find(conn, run_id)
        rows = store.candidates(conn, found.run_id)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(page.render(found, rows), encoding="utf-8")
    typer.echo(f"wrote {html}")


def _settings(context: CliContext, *, broker: bool) -> Settings:
    update: dict[str, Any] = {"database_url": context.database_url()}
    if broker:
        update["redis_url"] = context.redis_url()
    return context.settings.model_copy(update=update)


def _find(conn: psycopg.Connection, run_id: str | None) -> TradeoffRun:
    from offline.tradeoff import store

    found = store.latest_run(conn) if run_id is None else store.find_run(conn, run_id)
    if found is None:
        raise fail(f"no tradeoff run {run_id or '(none yet)'}", 2)
    return found


def _send(settings: Settings, conn: psycopg.Connection, run_id: uuid.UUID) -> None:
    from offline.tradeoff.sweep import send_sweep
    from shared.control.broker import broker_client
    from shared.control.names import TRAINING_QUEUE

    send_sweep(broker_client(settings), conn, run_id, queue=TRAINING_QUEUE)


def _wait(conn: psycopg.Connection, run_id: uuid.UUID, timeout: float = 24 * 3600) -> None:
    from offline.tradeoff import store

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = store.get_run(conn, run_id)
        if found is not None and found.status != "running":
            return
        time.sleep(1.0)
    raise fail(f"tradeoff run {run_id} did not finish in time", 1)


def _apply(
    conn: psycopg.Connection,
    settings: Settings,
    run_id: uuid.UUID,
    candidate: int | None,
    *,
    inline: bool,
    as_json: bool,
) -> None:
    from offline.runs import execute_run
    from offline.tradeoff.apply import NothingToApply, apply_choice

    try:
        applied = apply_choice(conn, settings, run_id, candidate_id=candidate)
    except NothingToApply as exc:
        raise fail(str(exc), 2) from None
    retrain = applied.trigger.run_id
    if not applied.trigger.created:
        message = f"a retrain is already {applied.trigger.status} (run {retrain}); it will not use"
        typer.echo(f"{message} the new settings, the next one will", err=True)
    elif inline:
        execute_run(settings, retrain)
    else:
        from shared.control.broker import broker_client
        from shared.control.results import BrokerUnavailable
        from shared.control.retrain import send_retrain

        try:
            send_retrain(conn, broker_client(settings), retrain)
        except BrokerUnavailable as exc:
            raise fail(f"{exc} (run {retrain} marked failed)", 1) from None
    outcome = registry.get_run(conn, retrain)
    if as_json:
        print_json(
            {
                "settings": asdict(applied.settings),
                "candidate": applied.candidate,
                "retrain": outcome,
            }
        )
        return
    typer.echo(f"applied #{applied.candidate.candidate_id} {applied.candidate.label} "
               f"(retrain_settings {applied.settings.settings_id})")  # fmt: skip
    if outcome is not None:
        detail = f" ({outcome.model_version})" if outcome.model_version else ""
        typer.echo(f"retrain {retrain}: {outcome.status}{detail}")
        if outcome.reason:
            typer.echo(f"  {outcome.reason}")


def _print_candidate(row: CandidateRow) -> None:
    if row.status == "failed":
        typer.echo(f"  #{row.candidate_id:<3} {row.label:<36} failed: {row.error}")
        return
    typer.echo(
        f"  #{row.candidate_id:<3} {row.label:<36} ndcg {row.ndcg or 0:.4f}"
        f"  fit {row.train_cpu_seconds or 0:.2f} s CPU"
        f"  serve {row.serving_cpu_per_1000 or 0:.3f} CPU s/1k  p99 {row.p99_ms or 0:.2f} ms"
    )


def _show(conn: psycopg.Connection, run_id: uuid.UUID, as_json: bool) -> None:
    from offline.tradeoff import store
    from offline.tradeoff.report import sizing_line

    found = store.get_run(conn, run_id)
    assert found is not None
    rows = store.candidates(conn, run_id)
    if as_json:
        print_json({"run": found, "candidates": rows})
        return
    typer.echo(
        f"tradeoff run {found.run_id}: {found.status}"
        + (f" ({found.error})" if found.error else "")
    )
    print_table(
        ["#", "candidate", "status", "ndcg", "retrain", "CPU s/1k", "p99 ms", "procs",
         "vCPU", "cost/day", "frontier"],
        [
            [r.candidate_id, ("* " if r.candidate_id == found.chosen_candidate else "  ") + r.label,
             r.status, r.ndcg, r.training_cost, r.serving_cpu_per_1000, r.p99_ms, r.processes,
             r.vcpus_per_process, r.daily_cost, "yes" if r.on_frontier else ""]
            for r in rows
        ],
    )  # fmt: skip
    by_id = {r.candidate_id: r for r in rows}
    if found.chosen_candidate is not None:
        chosen = by_id[found.chosen_candidate]
        typer.echo(
            f"chosen: #{chosen.candidate_id} {chosen.label}: {chosen.daily_cost or 0:.4g} "
            f"{found.currency}/day (floor {found.floor:g} x best NDCG {found.best_ndcg or 0:.4f})"
        )
        typer.echo("  " + sizing_line(chosen))
    if found.baseline_candidate is not None and found.saving is not None:
        base = by_id[found.baseline_candidate]
        typer.echo(
            f"current: #{base.candidate_id} {base.label}: {base.daily_cost or 0:.4g} "
            f"{found.currency}/day; saving {found.saving:.4g} {found.currency}/day"
        )
