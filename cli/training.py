"""`recsys train`, `recsys runs ...`, `recsys models ...`: operators steer retraining."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import typer

from cli.context import CliContext, cli_context, fail, print_json
from cli.tables import print_fields, print_table
from shared import registry

runs_app = typer.Typer(help="Retrain runs.", no_args_is_help=True)
models_app = typer.Typer(help="Model versions and the live pointer.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print JSON for scripts.")
FINISHED = {"promoted", "rejected", "skipped", "failed", "over_budget"}


def train(
    ctx: typer.Context,
    wait: bool = typer.Option(False, "--wait", help="Follow the run's phases until it ends."),
    force: bool = typer.Option(False, "--force", help="Retrain even if no event arrived."),
    inline: bool = typer.Option(False, "--inline", help="Run here, without a broker."),
    as_json: bool = JSON,
) -> None:
    """Trigger a retrain (one at a time: a second trigger answers with the running one)."""
    from offline.runs import execute_run
    from shared.control.retrain import request_retrain

    context = cli_context(ctx)
    settings = context.settings.model_copy(update={"database_url": context.database_url()})
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        trigger = request_retrain(conn, settings, trigger="cli", force=force)
        if not trigger.created:
            _answer_running(trigger.run_id, trigger.status, as_json)
            raise typer.Exit(3)
        if inline:
            execute_run(settings, trigger.run_id, on_phase=_phase_printer(as_json))
        else:
            _send(context, conn, trigger.run_id)
            if not as_json:
                typer.echo(f"run {trigger.run_id} queued")
            if wait:
                _follow(conn, trigger.run_id, quiet=as_json)
        run = registry.get_run(conn, trigger.run_id)
    assert run is not None
    if as_json:
        print_json(run)
    elif inline or wait:
        _print_outcome(run)
    if run.status == "failed":
        raise typer.Exit(1)


def _answer_running(run_id: uuid.UUID, status: str, as_json: bool) -> None:
    if as_json:
        print_json({"run_id": run_id, "status": status, "created": False})
    else:
        typer.echo(f"a retrain is already {status}: run {run_id}", err=True)


def _send(context: CliContext, conn: psycopg.Connection, run_id: uuid.UUID) -> None:
    """Queue the run for a worker; a broker that refuses fails the run (shared.control)."""
    from shared.control.broker import broker_client
    from shared.control.results import BrokerUnavailable
    from shared.control.retrain import send_retrain

    settings = context.settings.model_copy(
        update={"database_url": context.database_url(), "redis_url": context.redis_url()}
    )
    try:
        send_retrain(conn, broker_client(settings), run_id)
    except BrokerUnavailable as exc:
        raise fail(f"{exc} (run {run_id} marked failed)", 1) from None


def _phase_printer(quiet: bool) -> Any:
    def show(phase: str, done: list[Any]) -> None:
        if quiet:
            return
        if done:
            last = done[-1]
            typer.echo(
                f"  {last.phase:<10} {last.wall_seconds:7.2f} s wall {last.cpu_seconds:7.2f} s CPU"
            )
        if phase != "done":
            typer.echo(f"> {phase}")

    return show


def _follow(conn: psycopg.Connection, run_id: uuid.UUID, *, quiet: bool) -> None:
    """Print each phase as it starts and what it measured when it ends."""
    shown = 0
    phase = None
    while True:
        run = registry.get_run(conn, run_id)
        assert run is not None
        for done in run.phases[shown:]:
            if not quiet:
                typer.echo(
                    f"  {done['phase']:<10} {done['wall_seconds']:7.2f} s wall "
                    f"{done['cpu_seconds']:7.2f} s CPU"
                )
        shown = len(run.phases)
        if run.phase != phase and run.phase not in (None, "done") and not quiet:
            typer.echo(f"> {run.phase}")
        phase = run.phase
        if run.status in FINISHED:
            return
        time.sleep(0.5)


def _print_outcome(run: registry.Run) -> None:
    typer.echo(
        f"run {run.run_id}: {run.status}" + (f" ({run.model_version})" if run.model_version else "")
    )
    if run.reason:
        typer.echo(f"  {run.reason}")
    if run.error:
        typer.echo(f"  error: {run.error}")


@runs_app.command("list")
def runs_list(
    ctx: typer.Context, limit: int = typer.Option(20, min=1), as_json: bool = JSON
) -> None:
    """The latest retrain runs."""
    with psycopg.connect(cli_context(ctx).database_url()) as conn:
        runs = registry.list_runs(conn, limit=limit)
    if as_json:
        print_json(runs)
        return
    print_table(
        ["run", "status", "trigger", "requested", "phase", "version", "reason"],
        [
            [
                str(r.run_id)[:8],
                r.status,
                r.trigger,
                r.requested_at,
                r.phase,
                r.model_version,
                (r.reason or r.error or "")[:60],
            ]
            for r in runs
        ],
    )


@runs_app.command("show")
def runs_show(ctx: typer.Context, run: str, as_json: bool = JSON) -> None:
    """One run with its phases and metrics (a run id or its first characters)."""
    with psycopg.connect(cli_context(ctx).database_url()) as conn:
        found = _find_run(conn, run)
    if as_json:
        print_json(found)
        return
    print_fields(
        [
            ("run", found.run_id),
            ("status", found.status),
            ("trigger", found.trigger),
            ("requested", found.requested_at),
            ("started", found.started_at),
            ("finished", found.finished_at),
            ("version", found.model_version),
            ("reason", found.reason),
            ("error", found.error),
            ("host", found.host),
        ]
    )
    print_table(
        ["phase", "wall s", "cpu s", "peak rss MB", "energy J", "source"],
        [
            [
                p["phase"],
                p["wall_seconds"],
                p["cpu_seconds"],
                p["peak_rss_bytes"] / 1e6,
                p["energy_joules"],
                p["energy_source"],
            ]
            for p in found.phases
        ],
    )
    selection = found.metrics.get("selection")
    if selection:
        print_candidates(selection)
    for name in ("candidate", "popularity", "live"):
        if name in found.metrics:
            m = found.metrics[name]
            typer.echo(
                f"{name:<10} ndcg@{m['k']} {m['ndcg']:.4f}  precision {m['precision']:.4f}"
                f"  recall {m['recall']:.4f}  map {m['map']:.4f}  coverage "
                f"{m['coverage']:.3f}"
            )


def print_candidates(selection: dict[str, Any]) -> None:
    """Every candidate of a run's selection on the holdout; `*` marks the chosen one."""
    rows = []
    for c in selection["candidates"]:
        m = c["metrics"] or {}
        mark = "*" if c["label"] == selection["chosen"] else ""
        scored = [m.get(k) for k in ("precision", "recall", "ndcg", "map", "coverage")]
        rows.append(
            [mark, c["label"], *scored, c["fit_cpu_seconds"], c["evaluate_cpu_seconds"], c["note"]]
        )
    print_table(
        [
            "",
            "candidate",
            "precision",
            "recall",
            "ndcg",
            "map",
            "coverage",
            "fit cpu s",
            "eval cpu s",
            "note",
        ],
        rows,
    )


def _find_run(conn: psycopg.Connection, text: str) -> registry.Run:
    rows = conn.execute(
        "SELECT run_id FROM training_runs WHERE run_id::text LIKE %s || '%%' LIMIT 2", (text,)
    ).fetchall()
    if len(rows) != 1:
        raise fail(f"no single run matches {text!r}")
    run = registry.get_run(conn, rows[0][0])
    assert run is not None
    return run


@models_app.command("list")
def models_list(
    ctx: typer.Context, limit: int = typer.Option(20, min=1), as_json: bool = JSON
) -> None:
    """Model versions, newest first; `*` marks the live one."""
    with psycopg.connect(cli_context(ctx).database_url()) as conn:
        versions = registry.list_versions(conn, limit=limit)
    if as_json:
        print_json(versions)
        return
    print_table(
        ["", "version", "status", "created", "algorithm", "ndcg", "popularity", "reason"],
        [
            [
                "*" if v.promoted else "",
                v.version,
                v.status,
                v.created_at,
                v.algorithm,
                v.metrics.get("candidate", {}).get("ndcg"),
                v.metrics.get("popularity", {}).get("ndcg"),
                v.reason[:50],
            ]
            for v in versions
        ],
    )


@models_app.command("show")
def models_show(ctx: typer.Context, version: str, as_json: bool = JSON) -> None:
    """One version: parameters, data window, metrics, artifact."""
    with psycopg.connect(cli_context(ctx).database_url()) as conn:
        found = registry.get_version(conn, version)
    if found is None:
        raise fail(f"no model version {version!r}")
    if as_json:
        print_json(found)
        return
    print_fields(
        [
            ("version", found.version),
            ("live", found.promoted),
            ("status", found.status),
            ("reason", found.reason),
            ("created", found.created_at),
            ("algorithm", found.algorithm),
            ("params", found.params),
            ("data", found.data),
            ("artifact", found.artifact_path),
            ("artifact bytes", found.artifact_bytes),
            ("files deleted", found.files_deleted_at),
        ]
    )


@models_app.command("promote")
def models_promote(ctx: typer.Context, version: str, as_json: bool = JSON) -> None:
    """Make a kept version live (the API swaps to it within seconds)."""
    with psycopg.connect(cli_context(ctx).database_url(), autocommit=True) as conn:
        try:
            registry.promote_version(conn, version, moved_by="cli")
        except registry.RegistryError as exc:
            raise fail(str(exc)) from None
        live = registry.pointer(conn)
    _print_pointer(live, as_json)


@models_app.command("rollback")
def models_rollback(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Point back at the version that was live before the current one."""
    with psycopg.connect(cli_context(ctx).database_url(), autocommit=True) as conn:
        try:
            registry.rollback(conn, moved_by="cli")
        except registry.RegistryError as exc:
            raise fail(str(exc)) from None
        live = registry.pointer(conn)
    _print_pointer(live, as_json)


def _print_pointer(live: tuple[str, str | None] | None, as_json: bool) -> None:
    version, previous = live or (None, None)
    if as_json:
        print_json({"live": version, "previous": previous})
    else:
        typer.echo(f"live: {version} (previous: {previous or '-'})")
