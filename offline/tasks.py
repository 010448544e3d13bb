"""Thin Celery tasks: each one call into plain code, registered by `register_tasks(app)`.

Tasks are attached to the app that `create_celery_app(settings)` builds rather than to a
module-level app with `@app.task`: a module-level app would need settings (the broker URL) at
import time, and tests and the CLI each build their app from their own settings. Callers send
tasks by name (`shared.control.names`) and never need to import the task's code. Nothing here
may run threaded math at import: the worker's main process imports this before it forks.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task

from offline import worker_db
from shared.control.names import (
    PING,
    RETRAIN,
    RETRAIN_SCHEDULED,
    SWEEP_RUNS,
    TRADEOFF_FINISH,
    TRADEOFF_MEASURE,
    TUNE,
)
from shared.settings import Settings


def ping() -> dict[str, Any]:
    """Who answered, when, and whether its database pool works: for readiness checks."""
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "time": datetime.now(UTC).isoformat(),
        "database": worker_db.database_status(),
    }


def retrain(task: Task, run_id: str) -> dict[str, Any]:
    """Execute a run queued by a trigger (CLI, API); its row tells how it ended."""
    from offline.runs import execute_run

    outcome = execute_run(_settings(task), uuid.UUID(run_id))
    return {**asdict(outcome), "run_id": str(outcome.run_id)}


def retrain_scheduled(task: Task, force: bool = False) -> dict[str, Any]:
    """The beat entry: trigger a run and execute it here, unless one is already active."""
    from offline.runs import execute_run
    from shared.control.retrain import request_retrain

    settings = _settings(task)
    with worker_db.connection(settings) as conn:
        trigger = request_retrain(conn, settings, trigger="schedule", force=force)
    if not trigger.created:
        return {"run_id": str(trigger.run_id), "status": trigger.status, "created": False}
    outcome = execute_run(settings, trigger.run_id)
    return {**asdict(outcome), "run_id": str(outcome.run_id), "created": True}


def tune(
    task: Task,
    max_trials: int | None = None,
    max_cost: float | None = None,
    metric: str = "ndcg",
    algorithm: str = "als",
    apply: bool = True,
    trigger: str = "schedule",
) -> dict[str, Any]:
    """A hyper-parameter search (the weekly tune); its `tuning_runs` row tells how it ended."""
    from offline.tuning import run_tuning

    settings = _settings(task)
    with worker_db.connection(settings) as conn:
        result = run_tuning(
            conn,
            settings,
            max_trials=max_trials,
            max_cost=max_cost,
            metric=metric,
            algorithm=algorithm,
            apply=apply,
            trigger=trigger,
        )
    return result.to_dict()


def sweep_runs(task: Task) -> list[str]:
    """Mark runs whose worker died as failed (beat runs this every few minutes)."""
    from shared.control.retrain import sweep_abandoned_runs

    settings = _settings(task)
    with worker_db.connection(settings) as conn:
        return [str(run_id) for run_id in sweep_abandoned_runs(conn, settings)]


def tradeoff_measure(task: Task, run_id: str, candidate_ids: list[int] | int) -> dict[str, Any]:
    """Measure the candidates of one model setting of a tradeoff sweep (one fit, then each
    strategy in turn); their rows record the outcomes (never raises for a candidate).

    A single id (as tasks queued before the per-model fan-out carry) is measured alone.
    """
    from offline.tradeoff.sweep import measure_candidates

    ids = [candidate_ids] if isinstance(candidate_ids, int) else list(candidate_ids)
    settings = _settings(task)
    with worker_db.connection(settings) as conn:
        outcomes = measure_candidates(conn, settings, uuid.UUID(run_id), ids)
    statuses = [{"candidate_id": i, "status": outcomes[i]} for i in ids]
    return {"run_id": run_id, "candidates": statuses}


def tradeoff_finish(task: Task, run_id: str) -> dict[str, Any]:
    """Price a sweep's measured candidates, mark the frontier and choose (the chord's end)."""
    from offline.tradeoff.sweep import finish_sweep

    settings = _settings(task)
    with worker_db.connection(settings) as conn:
        choice = finish_sweep(conn, uuid.UUID(run_id))
    return {"run_id": run_id, **choice.to_dict()}


def _settings(task: Task) -> Settings:
    settings: Settings = task.app.settings
    return settings


def register_tasks(app: Celery) -> None:
    """Attach every task to app under its stable name."""
    app.task(name=PING, acks_late=False, soft_time_limit=20, time_limit=30)(ping)
    # A retrain whose worker died is not requeued: it would likely die again (out of memory)
    # and take the next worker with it. The run is marked failed by the next trigger or sweep.
    retrain_options: dict[str, Any] = {
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": False,
    }
    app.task(name=RETRAIN, **retrain_options)(retrain)
    app.task(name=RETRAIN_SCHEDULED, **retrain_options)(retrain_scheduled)
    app.task(name=TUNE, **retrain_options)(tune)
    app.task(name=SWEEP_RUNS, bind=True, acks_late=False, time_limit=60)(sweep_runs)
    app.task(name=TRADEOFF_MEASURE, bind=True, acks_late=True)(tradeoff_measure)
    app.task(name=TRADEOFF_FINISH, bind=True, acks_late=True)(tradeoff_finish)
