"""Trigger a retrain (one at a time) and queue it for a worker: the one way every caller does it.

The admin API, `recsys train`, the tradeoff lab's apply and beat all come here. A run's row is
created first (a unique index allows one queued or running run); the Celery message only wakes
a worker. When the broker cannot take the message, the run is marked failed at once, so it
blocks no later trigger (a `queued` row nobody will pick up would answer 409 until the sweep).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Protocol

import psycopg

from shared import registry
from shared.control.names import RETRAIN, TRAINING_QUEUE
from shared.control.results import BrokerUnavailable
from shared.db import LOCK_RETRAIN
from shared.retrain_config import retrain_config
from shared.settings import Settings

log = logging.getLogger(__name__)
ABANDONED = "the worker running it stopped (killed, crashed or lost) before it finished"


@dataclass(frozen=True)
class Trigger:
    """What a trigger did: queued a new run, or found the one already queued or running."""

    run_id: uuid.UUID
    created: bool
    status: str


class TaskSender(Protocol):
    """What queueing needs of a Celery app (`shared.control.broker.broker_client`)."""

    def send_task(self, name: str, *args: object, **kwargs: object) -> object: ...


def request_retrain(
    conn: psycopg.Connection, settings: Settings, *, trigger: str, force: bool
) -> Trigger:
    """Create a `queued` run unless one is queued or running; then answer with that one."""
    sweep_abandoned_runs(conn, settings)
    snapshot = retrain_config(settings).to_dict()
    try:
        with conn.transaction():
            run_id = registry.create_run(conn, trigger=trigger, forced=force, settings=snapshot)
        return Trigger(run_id, True, "queued")
    except psycopg.errors.UniqueViolation:
        active = registry.active_run(conn)
        if active is None:  # it finished between our insert and this read: try once more
            return request_retrain(conn, settings, trigger=trigger, force=force)
        return Trigger(active.run_id, False, active.status)


def send_retrain(conn: psycopg.Connection, client: TaskSender, run_id: uuid.UUID) -> None:
    """Send a queued run to a worker; if the broker refuses, fail the run and say so."""
    try:
        # No result: the run row tells how it ended, and waiting on results would make each
        # send subscribe to (and on a dead Redis, retry for ~20 s against) the result store.
        sent = client.send_task(
            RETRAIN, args=[str(run_id)], queue=TRAINING_QUEUE, ignore_result=True
        )
    except Exception as exc:
        with conn.transaction():
            registry.finish_run(conn, run_id, status="failed", error=f"not queued: {exc}")
        raise BrokerUnavailable(f"the retrain could not be queued on the broker: {exc}") from exc
    with conn.transaction():
        registry.set_task_id(conn, run_id, str(getattr(sent, "id", "")))


def queue_retrain(
    conn: psycopg.Connection,
    settings: Settings,
    client: TaskSender,
    *,
    trigger: str,
    force: bool,
) -> Trigger:
    """request_retrain, then send_retrain for a run it created."""
    found = request_retrain(conn, settings, trigger=trigger, force=force)
    if found.created:
        send_retrain(conn, client, found.run_id)
    return found


def sweep_abandoned_runs(conn: psycopg.Connection, settings: Settings) -> list[uuid.UUID]:
    """Mark runs whose worker is gone as failed (running without the lock; queued too long)."""
    failed: list[uuid.UUID] = []
    with conn.transaction():
        free = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_RETRAIN,)).fetchone()
        if free and free[0]:
            failed += registry.fail_abandoned_runs(conn, reason=ABANDONED)
        failed += registry.fail_stale_queued_runs(
            conn,
            older_than_seconds=settings.task_time_limit_seconds,
            reason="no worker picked the run up in time",
        )
    for run_id in failed:
        log.warning("run %s marked failed: %s", run_id, ABANDONED)
    return failed
