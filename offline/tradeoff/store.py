"""SQL of the tradeoff lab: sweeps and their candidates (migration 0006); values always bound."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from offline.tradeoff.candidates import Candidate
from offline.tradeoff.costing import DailyCost
from offline.tradeoff.measure import Measurement


@dataclass(frozen=True)
class TradeoffRun:
    run_id: uuid.UUID
    created_at: datetime
    finished_at: datetime | None
    status: str
    mode: str
    workload: dict[str, Any]
    floor: float
    price_id: int
    currency: str
    config: dict[str, Any]
    baseline_candidate: int | None
    chosen_candidate: int | None
    best_ndcg: float | None
    saving: float | None
    applied: bool
    applied_at: datetime | None
    applied_settings_id: int | None
    applied_retrain: uuid.UUID | None
    task_id: str | None
    error: str | None


@dataclass(frozen=True)
class CandidateRow:
    run_id: uuid.UUID
    candidate_id: int
    label: str
    model: dict[str, Any]
    serving: dict[str, Any]
    is_baseline: bool
    status: str
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    k: int | None
    ndcg: float | None
    recall: float | None
    precision: float | None
    eval_users: int | None
    train_wall_seconds: float | None
    train_cpu_seconds: float | None
    train_peak_rss_bytes: int | None
    final_fit_factor: float | None
    training_cost: float | None
    requests: int | None
    serving_cpu_per_1000: float | None
    p50_ms: float | None
    p99_ms: float | None
    rss_growth_bytes: int | None
    artifact_bytes: int | None
    recall_vs_exact: float | None
    ann_recall: float | None
    notes: str | None
    processes: int | None
    daily_training: float | None
    daily_serving_used: float | None
    daily_capacity_idle: float | None
    daily_memory: float | None
    daily_cost: float | None
    on_frontier: bool
    vcpus_per_process: float | None
    sizings: list[dict[str, Any]] | None

    def candidate(self) -> Candidate:
        return Candidate(self.model, self.serving, self.label, self.is_baseline)


_MEASURED = tuple(f.name for f in fields(Measurement))


def create_run(
    conn: psycopg.Connection,
    *,
    mode: str,
    workload: dict[str, Any],
    floor: float,
    price_id: int,
    currency: str,
    config: dict[str, Any],
    candidates: Sequence[Candidate],
) -> uuid.UUID:
    """The sweep's row and one queued row per candidate (ids 0..n-1), in one transaction."""
    run_id = uuid.uuid4()
    baseline = next((i for i, c in enumerate(candidates) if c.baseline), None)
    with conn.transaction():
        conn.execute(
            "INSERT INTO tradeoff_runs (run_id, mode, workload, floor, price_id, currency, config,"
            " baseline_candidate) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (run_id, mode, Jsonb(workload), floor, price_id, currency, Jsonb(config), baseline),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO tradeoff_candidates (run_id, candidate_id, label, model, serving,"
                " is_baseline) VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (run_id, i, c.label, Jsonb(c.model), Jsonb(c.serving), c.baseline)
                    for i, c in enumerate(candidates)
                ],
            )
    return run_id


def get_run(conn: psycopg.Connection, run_id: uuid.UUID) -> TradeoffRun | None:
    with conn.cursor(row_factory=class_row(TradeoffRun)) as cur:
        return cur.execute("SELECT * FROM tradeoff_runs WHERE run_id = %s", (run_id,)).fetchone()


def latest_run(conn: psycopg.Connection) -> TradeoffRun | None:
    with conn.cursor(row_factory=class_row(TradeoffRun)) as cur:
        return cur.execute(
            "SELECT * FROM tradeoff_runs ORDER BY created_at DESC LIMIT 1"
        ).fetchone()


def list_runs(conn: psycopg.Connection, *, limit: int = 20) -> list[TradeoffRun]:
    with conn.cursor(row_factory=class_row(TradeoffRun)) as cur:
        return cur.execute(
            "SELECT * FROM tradeoff_runs ORDER BY created_at DESC LIMIT %s", (limit,)
        ).fetchall()


def find_run(conn: psycopg.Connection, prefix: str) -> TradeoffRun | None:
    """A run by its id or a unique prefix of it (as `runs show` takes them)."""
    with conn.cursor(row_factory=class_row(TradeoffRun)) as cur:
        rows = cur.execute(
            "SELECT * FROM tradeoff_runs WHERE run_id::text LIKE %s LIMIT 2",
            (prefix.lower().replace("%", "").replace("_", "") + "%",),
        ).fetchall()
    return rows[0] if len(rows) == 1 else None


def candidates(conn: psycopg.Connection, run_id: uuid.UUID) -> list[CandidateRow]:
    with conn.cursor(row_factory=class_row(CandidateRow)) as cur:
        return cur.execute(
            "SELECT * FROM tradeoff_candidates WHERE run_id = %s ORDER BY candidate_id", (run_id,)
        ).fetchall()


def get_candidate(
    conn: psycopg.Connection, run_id: uuid.UUID, candidate_id: int
) -> CandidateRow | None:
    with conn.cursor(row_factory=class_row(CandidateRow)) as cur:
        return cur.execute(
            "SELECT * FROM tradeoff_candidates WHERE run_id = %s AND candidate_id = %s",
            (run_id, candidate_id),
        ).fetchone()


def start_candidate(conn: psycopg.Connection, run_id: uuid.UUID, candidate_id: int) -> None:
    conn.execute(
        "UPDATE tradeoff_candidates SET status = 'running', started_at = clock_timestamp()"
        " WHERE run_id = %s AND candidate_id = %s",
        (run_id, candidate_id),
    )


def record_measurement(
    conn: psycopg.Connection, run_id: uuid.UUID, candidate_id: int, measured: Measurement
) -> None:
    values = measured.to_dict()
    assignments = ", ".join(f"{name} = %s" for name in _MEASURED)
    conn.execute(
        f"UPDATE tradeoff_candidates SET {assignments}, status = 'done',"
        " finished_at = clock_timestamp() WHERE run_id = %s AND candidate_id = %s",
        [*(values[name] for name in _MEASURED), run_id, candidate_id],
    )


def fail_candidate(
    conn: psycopg.Connection, run_id: uuid.UUID, candidate_id: int, error: str
) -> None:
    conn.execute(
        "UPDATE tradeoff_candidates SET status = 'failed', error = %s,"
        " finished_at = clock_timestamp() WHERE run_id = %s AND candidate_id = %s",
        (error, run_id, candidate_id),
    )


def record_cost(
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    candidate_id: int,
    cost: DailyCost,
    *,
    on_frontier: bool,
) -> None:
    conn.execute(
        "UPDATE tradeoff_candidates SET processes = %s, daily_training = %s,"
        " daily_serving_used = %s, daily_capacity_idle = %s, daily_memory = %s,"
        " daily_cost = %s, on_frontier = %s, vcpus_per_process = %s, sizings = %s"
        " WHERE run_id = %s AND candidate_id = %s",
        (
            cost.processes,
            cost.training,
            cost.serving_used,
            cost.capacity_idle,
            cost.memory,
            cost.total,
            on_frontier,
            cost.vcpus_per_process,
            Jsonb([sizing.to_dict() for sizing in cost.sizings]),
            run_id,
            candidate_id,
        ),
    )


def finish_run(
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    *,
    status: str,
    chosen: int | None = None,
    best_ndcg: float | None = None,
    saving: float | None = None,
    error: str | None = None,
) -> None:
    conn.execute(
        "UPDATE tradeoff_runs SET status = %s, chosen_candidate = %s, best_ndcg = %s,"
        " saving = %s, error = %s, finished_at = clock_timestamp() WHERE run_id = %s",
        (status, chosen, best_ndcg, saving, error, run_id),
    )


def set_task_id(conn: psycopg.Connection, run_id: uuid.UUID, task_id: str) -> None:
    conn.execute("UPDATE tradeoff_runs SET task_id = %s WHERE run_id = %s", (task_id, run_id))


def mark_applied(
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    *,
    settings_id: int,
    retrain: uuid.UUID | None,
) -> None:
    conn.execute(
        "UPDATE tradeoff_runs SET applied = true, applied_at = clock_timestamp(),"
        " applied_settings_id = %s, applied_retrain = %s WHERE run_id = %s",
        (settings_id, retrain, run_id),
    )
