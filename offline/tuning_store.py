"""SQL for `tuning_runs` (migration 0005): one row per hyper-parameter search.

The search (offline/tuning.py) appends each trial to the row as it finishes and commits, so
`recsys tune show` can follow a search that runs on a worker. Values are always bound.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

FINISHED = ("done", "failed", "over_budget")


@dataclass(frozen=True)
class TuningRun:
    tuning_id: uuid.UUID
    started_at: datetime
    finished_at: datetime | None
    status: str  # running | done | failed | over_budget
    trigger: str
    metric: str
    max_trials: int | None
    max_cost: float | None
    currency: str | None
    trials: list[dict[str, Any]]
    best_params: dict[str, Any] | None
    best_value: float | None
    cpu_seconds: float
    cost: float | None
    applied: bool
    error: str | None  # why it failed, or why it stopped early (over budget)


@dataclass(frozen=True)
class Progress:
    """Totals and the best trial so far, written with every trial."""

    cpu_seconds: float
    cost: float | None
    best_params: dict[str, Any] | None
    best_value: float | None


def create_tuning(
    conn: psycopg.Connection,
    *,
    trigger: str,
    metric: str,
    max_trials: int | None,
    max_cost: float | None,
    currency: str | None,
) -> uuid.UUID:
    """A new row in status running; committed at once so it is visible while the search runs."""
    tuning_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO tuning_runs (tuning_id, trigger, metric, max_trials, max_cost, currency)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (tuning_id, trigger, metric, max_trials, max_cost, currency),
    )
    conn.commit()
    return tuning_id


def record_trial(
    conn: psycopg.Connection, tuning_id: uuid.UUID, trial: dict[str, Any], progress: Progress
) -> None:
    """Append one finished (or interrupted) trial and the totals so far; commits."""
    conn.execute(
        "UPDATE tuning_runs SET trials = trials || jsonb_build_array(%s::jsonb),"
        " cpu_seconds = %s, cost = %s, best_params = %s, best_value = %s"
        " WHERE tuning_id = %s",
        (Jsonb(trial), *_progress(progress), tuning_id),
    )
    conn.commit()


def finish_tuning(
    conn: psycopg.Connection,
    tuning_id: uuid.UUID,
    *,
    status: str,
    progress: Progress,
    applied: bool = False,
    error: str | None = None,
) -> None:
    """Close the row with its outcome; commits."""
    if status not in FINISHED:
        raise ValueError(f"a finished search is one of {FINISHED}, not {status!r}")
    conn.execute(
        "UPDATE tuning_runs SET status = %s, finished_at = clock_timestamp(), applied = %s,"
        " error = %s, cpu_seconds = %s, cost = %s, best_params = %s, best_value = %s"
        " WHERE tuning_id = %s",
        (status, applied, error, *_progress(progress), tuning_id),
    )
    conn.commit()


def fail_stale_tunings(
    conn: psycopg.Connection, *, older_than_seconds: float, reason: str
) -> list[uuid.UUID]:
    """Searches still running after the task time limit lost their worker: mark them failed.

    The worker's time limit would have killed any search by then, so such a row can only be
    the leftover of a dead process. Commits.
    """
    rows = conn.execute(
        "UPDATE tuning_runs SET status = 'failed', finished_at = clock_timestamp(), error = %s"
        " WHERE status = 'running' AND started_at < now() - make_interval(secs => %s)"
        " RETURNING tuning_id",
        (reason, older_than_seconds),
    ).fetchall()
    conn.commit()
    return [row[0] for row in rows]


def count_tunings(conn: psycopg.Connection) -> int:
    """How many searches were ever started (this one included, once created)."""
    row = conn.execute("SELECT count(*) FROM tuning_runs").fetchone()
    return int(row[0]) if row else 0


def get_tuning(conn: psycopg.Connection, tuning_id: uuid.UUID) -> TuningRun | None:
    with conn.cursor(row_factory=class_row(TuningRun)) as cur:
        return cur.execute(
            "SELECT * FROM tuning_runs WHERE tuning_id = %s", (tuning_id,)
        ).fetchone()


def find_tuning(conn: psycopg.Connection, prefix: str | None = None) -> TuningRun | None:
    """The newest search, or the one whose id starts with `prefix` (None when not unique)."""
    with conn.cursor(row_factory=class_row(TuningRun)) as cur:
        if prefix is None:
            return cur.execute(
                "SELECT * FROM tuning_runs ORDER BY started_at DESC LIMIT 1"
            ).fetchone()
        rows = cur.execute(
            "SELECT * FROM tuning_runs WHERE tuning_id::text LIKE %s || '%%' LIMIT 2",
            (prefix.lower(),),
        ).fetchall()
    return rows[0] if len(rows) == 1 else None


def list_tunings(conn: psycopg.Connection, *, limit: int = 20) -> list[TuningRun]:
    with conn.cursor(row_factory=class_row(TuningRun)) as cur:
        return cur.execute(
            "SELECT * FROM tuning_runs ORDER BY started_at DESC LIMIT %s", (limit,)
        ).fetchall()


def _progress(progress: Progress) -> tuple[Any, ...]:
    best = None if progress.best_params is None else Jsonb(progress.best_params)
    return (progress.cpu_seconds, progress.cost, best, progress.best_value)
