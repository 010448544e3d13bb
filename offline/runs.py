"""The life of a retrain run: trigger (one at a time), execute under a lock, sweep the dead.

A run's row is created by whoever triggers it (CLI, API, beat) and executed by a worker (or
inline). The retrain lock is a PostgreSQL session advisory lock held on its own connection for
the whole run: if the worker dies, PostgreSQL drops the connection and the lock with it, so the
next trigger or sweep can tell a live run from an abandoned one.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from offline.pipeline import NoTrainingData, PhaseCallback, RetrainResult, run_retrain
from offline.retrain_overrides import overrides_in_force
from shared import artifacts, cost_queries, costs, registry
from shared.control.retrain import ABANDONED
from shared.db import LOCK_RETRAIN
from shared.hardware import HostInfo
from shared.metering import Meter, PhaseMeasurement, PhaseProgress
from shared.retrain_config import retrain_config
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    run_id: uuid.UUID
    status: str
    reason: str | None
    version: str | None = None


class RetrainAlreadyRunning(RuntimeError):
    def __init__(self, run_id: uuid.UUID | None) -> None:
        super().__init__(f"a retrain is already running (run {run_id})")
        self.run_id = run_id


@contextmanager
def retrain_lock(database_url: str) -> Iterator[bool]:
    """Hold the retrain lock for the block if it is free; yields whether we got it."""
    with psycopg.connect(database_url, autocommit=True) as holder:
        row = holder.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_RETRAIN,)).fetchone()
        yield bool(row and row[0])
        # Closing the connection releases the lock, also when this process dies.


def execute_run(
    settings: Settings,
    run_id: uuid.UUID,
    *,
    meter: Meter | None = None,
    on_phase: PhaseCallback | None = None,
) -> RunOutcome:
    """Run a queued retrain to its end: promoted, rejected, skipped or failed."""
    database_url = settings.require_database_url()
    with (
        retrain_lock(database_url) as locked,
        psycopg.connect(database_url, autocommit=True) as conn,
    ):
        if not locked:
            active = registry.running_run(conn)
            raise RetrainAlreadyRunning(active.run_id if active else None)
        registry.fail_abandoned_runs(conn, reason=ABANDONED)  # we hold the lock: none is live
        run = registry.get_run(conn, run_id)
        if run is None:
            raise ValueError(f"no run {run_id}")
        if run.status != "queued":
            return RunOutcome(run_id, run.status, "the run was already started once; not rerun")
        registry.start_run(conn, run_id, host=socket.gethostname(), pid=os.getpid())
        return _execute(conn, settings, run, meter=meter, on_phase=on_phase)


def _execute(
    conn: psycopg.Connection,
    settings: Settings,
    run: registry.Run,
    *,
    meter: Meter | None,
    on_phase: PhaseCallback | None,
) -> RunOutcome:
    latest = registry.latest_version(conn)
    if (
        not run.forced
        and latest is not None
        and not registry.events_received_since(conn, latest.received_until)
    ):
        reason = f"no event arrived since version {latest.version}"
        registry.finish_run(conn, run.run_id, status="skipped", reason=reason)
        return RunOutcome(run.run_id, "skipped", reason)
    meter = meter or Meter(energy=costs.energy_model(settings))
    budget = _run_budget(conn, settings, meter)

    def progress(phase: str, done: list[PhaseMeasurement]) -> None:
        registry.record_phase(conn, run.run_id, phase=phase, phases=_phases(done))
        if on_phase:
            on_phase(phase, done)
        if budget is not None and phase != "done":
            budget.check(done, at=f"the start of {phase}")

    def iteration(running: PhaseProgress, n: int) -> None:
        if budget is not None:
            budget.check(meter.measurements, running, at=f"{running.phase} iteration {n}")

    config = retrain_config(settings, overrides_in_force(conn))
    price = costs.price_in_force(conn) if config.selection_budget_unit == "money" else None
    try:
        result = run_retrain(
            conn,
            run_id=run.run_id,
            config=config,
            selection_price=price,
            artifact_dir=settings.artifact_dir,
            meter=meter,
            on_phase=progress,
            on_iteration=iteration if budget is not None else None,
        )
    except NoTrainingData as exc:
        _record_costs(conn, settings, run.run_id, meter, model_version=None)
        registry.finish_run(conn, run.run_id, status="skipped", reason=str(exc))
        return RunOutcome(run.run_id, "skipped", str(exc))
    except costs.OverBudget as exc:
        conn.rollback()
        _record_costs(conn, settings, run.run_id, meter, model_version=None)
        registry.record_phase(conn, run.run_id, phase="done", phases=_phases(meter.measurements))
        registry.finish_run(conn, run.run_id, status="over_budget", reason=str(exc))
        log.warning("run %s stopped: %s", run.run_id, exc)
        return RunOutcome(run.run_id, "over_budget", str(exc))
    except BaseException as exc:
        conn.rollback()
        _record_costs(conn, settings, run.run_id, meter, model_version=None)
        registry.finish_run(conn, run.run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    _finish(conn, run.run_id, result)
    _record_costs(conn, settings, run.run_id, meter, model_version=result.version)
    prune_artifacts(conn, settings)
    return RunOutcome(run.run_id, result.status, result.reason, result.version)


def _run_budget(
    conn: psycopg.Connection, settings: Settings, meter: Meter
) -> costs.RunBudget | None:
    """The run's cost ceiling, priced with the version in force now; None when there is none."""
    if settings.training_cost_ceiling is None:
        return None
    price = costs.price_in_force(conn)
    if price is None or price.currency != settings.cost_currency:
        log.warning(
            "training_cost_ceiling not enforced: no price version in %s is in force",
            settings.cost_currency,
        )
        return None
    return costs.RunBudget(price, settings.training_cost_ceiling, meter.energy)


def _record_costs(
    conn: psycopg.Connection,
    settings: Settings,
    run_id: uuid.UUID,
    meter: Meter,
    *,
    model_version: str | None,
) -> None:
    """Put the run's measured phases on the cost ledger; never hides the run's own outcome."""
    try:
        run = registry.get_run(conn, run_id)  # read now: the trigger sets task_id after sending
        costs.record_training_phases(
            conn,
            run_id=run_id,
            model_version=model_version,
            measurements=meter.measurements,
            host=HostInfo.detect(),
            task_id=run.task_id if run else None,
        )
    except Exception:
        log.exception("could not record the costs of run %s", run_id)
        return
    try:
        cost_queries.warn_on_daily_budgets(conn, settings, paths=("training",))
    except psycopg.Error:
        log.exception("could not check the daily training budget")


def _finish(conn: psycopg.Connection, run_id: uuid.UUID, result: RetrainResult) -> None:
    registry.record_phase(conn, run_id, phase="done", phases=_phases(result.phases))
    registry.finish_run(
        conn,
        run_id,
        status=result.status,
        reason=result.reason,
        metrics=result.metrics,
        model_version=result.version,
    )


def _phases(done: list[PhaseMeasurement]) -> list[dict[str, Any]]:
    return [m.to_dict() for m in done]


def prune_artifacts(conn: psycopg.Connection, settings: Settings) -> list[str]:
    """Delete the files of old versions beyond keep_versions; never the live or previous one."""
    live = registry.pointer(conn)
    protect = {v for v in (live or ()) if v}
    artifacts.remove_stale_temp_dirs(settings.artifact_dir)
    deleted = artifacts.prune_versions(
        settings.artifact_dir, keep_last=settings.keep_versions, protect=protect
    )
    registry.mark_files_deleted(conn, deleted)
    return deleted
