"""SQL for training runs, model versions and the promoted pointer (offline writes, all read)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

PROMOTION_CHANNEL = "recsys_model_promoted"


@dataclass
class Run:
    run_id: uuid.UUID
    status: str
    trigger: str
    task_id: str | None
    forced: bool
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    phase: str | None
    phases: list[dict[str, Any]]
    settings: dict[str, Any]
    metrics: dict[str, Any]
    model_version: str | None
    reason: str | None
    error: str | None
    host: str | None
    pid: int | None


@dataclass
class ModelVersion:
    version: str
    run_id: uuid.UUID
    created_at: datetime
    status: str
    reason: str
    algorithm: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    data: dict[str, Any]
    artifact_path: str
    artifact_bytes: int
    events_until: datetime | None
    received_until: datetime | None
    files_deleted_at: datetime | None
    promoted: bool = field(default=False)


class RegistryError(ValueError):
    """An operator asked for something the registry cannot do (unknown version, no previous)."""


_RUN_COLUMNS = (
    "run_id, status::text, trigger, task_id, forced, requested_at, started_at, finished_at, "
    "heartbeat_at, phase, phases, settings, metrics, model_version, reason, error, host, pid"
)
_VERSION_COLUMNS = (
    "v.version, v.run_id, v.created_at, v.status::text, v.reason, v.algorithm, v.params, "
    "v.metrics, v.data, v.artifact_path, v.artifact_bytes, v.events_until, v.received_until, "
    "v.files_deleted_at, (p.version IS NOT NULL) AS promoted"
)
_VERSIONS_FROM = "model_versions v LEFT JOIN model_pointer p ON p.version = v.version"


# --- runs ---------------------------------------------------------------------------------


def create_run(
    conn: psycopg.Connection, *, trigger: str, forced: bool, settings: dict[str, Any]
) -> uuid.UUID:
    run_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO training_runs (run_id, trigger, forced, settings) VALUES (%s, %s, %s, %s)",
        (run_id, trigger, forced, Jsonb(settings)),
    )
    return run_id


def set_task_id(conn: psycopg.Connection, run_id: uuid.UUID, task_id: str) -> None:
    conn.execute("UPDATE training_runs SET task_id = %s WHERE run_id = %s", (task_id, run_id))


def start_run(conn: psycopg.Connection, run_id: uuid.UUID, *, host: str, pid: int) -> None:
    conn.execute(
        "UPDATE training_runs SET status = 'running', started_at = now(), heartbeat_at = now(), "
        "host = %s, pid = %s WHERE run_id = %s",
        (host, pid, run_id),
    )


def record_phase(
    conn: psycopg.Connection, run_id: uuid.UUID, *, phase: str, phases: list[dict[str, Any]]
) -> None:
    """Say which phase is running now and what the finished ones measured."""
    conn.execute(
        "UPDATE training_runs SET phase = %s, phases = %s, heartbeat_at = now() WHERE run_id = %s",
        (phase, Jsonb(phases), run_id),
    )


def finish_run(
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    *,
    status: str,
    reason: str | None = None,
    error: str | None = None,
    metrics: dict[str, Any] | None = None,
    model_version: str | None = None,
) -> None:
    conn.execute(
        "UPDATE training_runs SET status = %s, finished_at = now(), phase = NULL, reason = %s, "
        "error = %s, metrics = coalesce(%s, metrics), model_version = %s WHERE run_id = %s",
        (
            status,
            reason,
            error,
            Jsonb(metrics) if metrics is not None else None,
            model_version,
            run_id,
        ),
    )


def fail_abandoned_runs(conn: psycopg.Connection, *, reason: str) -> list[uuid.UUID]:
    """Mark runs left `running` or `queued` by a dead worker as failed.

    Only call this while holding the retrain lock: then no live run exists, so any run
    still marked running lost its worker.
    """
    rows = conn.execute(
        "UPDATE training_runs SET status = 'failed', finished_at = now(), error = %s "
        "WHERE status = 'running' RETURNING run_id",
        (reason,),
    ).fetchall()
    return [row[0] for row in rows]


def get_run(conn: psycopg.Connection, run_id: uuid.UUID) -> Run | None:
    with conn.cursor(row_factory=class_row(Run)) as cur:
        return cur.execute(
            f"SELECT {_RUN_COLUMNS} FROM training_runs WHERE run_id = %s", (run_id,)
        ).fetchone()


def running_run(conn: psycopg.Connection) -> Run | None:
    with conn.cursor(row_factory=class_row(Run)) as cur:
        return cur.execute(
            f"SELECT {_RUN_COLUMNS} FROM training_runs WHERE status = 'running'"
        ).fetchone()


def list_runs(conn: psycopg.Connection, *, limit: int = 20) -> list[Run]:
    with conn.cursor(row_factory=class_row(Run)) as cur:
        return cur.execute(
            f"SELECT {_RUN_COLUMNS} FROM training_runs ORDER BY requested_at DESC LIMIT %s",
            (limit,),
        ).fetchall()


# --- versions and the pointer --------------------------------------------------------------


def publish_version(
    conn: psycopg.Connection, version: ModelVersion, *, promote: bool, moved_by: str
) -> None:
    """Insert the version row and, when promoted, move the pointer: one transaction."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO model_versions (version, run_id, status, reason, algorithm, params, "
            "metrics, data, artifact_path, artifact_bytes, events_until, received_until) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                version.version,
                version.run_id,
                version.status,
                version.reason,
                version.algorithm,
                Jsonb(version.params),
                Jsonb(version.metrics),
                Jsonb(version.data),
                version.artifact_path,
                version.artifact_bytes,
                version.events_until,
                version.received_until,
            ),
        )
        if promote:
            _move_pointer(conn, version.version, moved_by=moved_by)


def promote_version(conn: psycopg.Connection, version: str, *, moved_by: str) -> None:
    """Make a kept version live (operators); the old live one becomes `previous`."""
    with conn.transaction():
        found = get_version(conn, version)
        if found is None:
            raise RegistryError(f"no model version {version!r}")
        if found.files_deleted_at is not None:
            raise RegistryError(f"the files of {version!r} were pruned; it cannot be promoted")
        _move_pointer(conn, version, moved_by=moved_by)


def rollback(conn: psycopg.Connection, *, moved_by: str) -> str:
    """Point back at the version that was live before the current one; returns it."""
    with conn.transaction():
        row = conn.execute("SELECT version, previous FROM model_pointer FOR UPDATE").fetchone()
        if row is None or row[1] is None:
            raise RegistryError("there is no previous version to roll back to")
        _move_pointer(conn, row[1], moved_by=moved_by)
        return str(row[1])


def _move_pointer(conn: psycopg.Connection, version: str, *, moved_by: str) -> None:
    conn.execute(
        "INSERT INTO model_pointer (singleton, version, previous, moved_by) "
        "VALUES (true, %s, NULL, %s) "
        "ON CONFLICT (singleton) DO UPDATE SET previous = CASE "
        "  WHEN model_pointer.version = EXCLUDED.version THEN model_pointer.previous "
        "  ELSE model_pointer.version END, "
        "version = EXCLUDED.version, moved_at = now(), moved_by = EXCLUDED.moved_by",
        (version, moved_by),
    )
    conn.execute("UPDATE model_versions SET status = 'promoted' WHERE version = %s", (version,))
    conn.execute("SELECT pg_notify(%s, %s)", (PROMOTION_CHANNEL, version))


def promoted_version(conn: psycopg.Connection) -> ModelVersion | None:
    with conn.cursor(row_factory=class_row(ModelVersion)) as cur:
        return cur.execute(
            f"SELECT {_VERSION_COLUMNS} FROM {_VERSIONS_FROM} WHERE p.version IS NOT NULL"
        ).fetchone()


def pointer(conn: psycopg.Connection) -> tuple[str, str | None] | None:
    """(live version, previous version) or None before the first promotion."""
    row = conn.execute("SELECT version, previous FROM model_pointer").fetchone()
    return (row[0], row[1]) if row else None


def get_version(conn: psycopg.Connection, version: str) -> ModelVersion | None:
    with conn.cursor(row_factory=class_row(ModelVersion)) as cur:
        return cur.execute(
            f"SELECT {_VERSION_COLUMNS} FROM {_VERSIONS_FROM} WHERE v.version = %s", (version,)
        ).fetchone()


def list_versions(conn: psycopg.Connection, *, limit: int = 50) -> list[ModelVersion]:
    with conn.cursor(row_factory=class_row(ModelVersion)) as cur:
        return cur.execute(
            f"SELECT {_VERSION_COLUMNS} FROM {_VERSIONS_FROM} ORDER BY v.created_at DESC LIMIT %s",
            (limit,),
        ).fetchall()


def latest_version(conn: psycopg.Connection) -> ModelVersion | None:
    found = list_versions(conn, limit=1)
    return found[0] if found else None


def mark_files_deleted(conn: psycopg.Connection, versions: list[str]) -> None:
    if versions:
        conn.execute(
            "UPDATE model_versions SET files_deleted_at = now(), "
            "status = CASE WHEN status = 'promoted' THEN status ELSE 'retired' END "
            "WHERE version = ANY(%s)",
            (versions,),
        )


def events_received_since(conn: psycopg.Connection, moment: datetime | None) -> bool:
    """Whether any event arrived after `moment` (None: whether there is any event at all)."""
    if moment is None:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()
    else:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM events WHERE received_at > %s)", (moment,)
        ).fetchone()
    return bool(row and row[0])


def active_run(conn: psycopg.Connection) -> Run | None:
    """The run that is queued or running, if any (at most one, by a unique index)."""
    with conn.cursor(row_factory=class_row(Run)) as cur:
        return cur.execute(
            f"SELECT {_RUN_COLUMNS} FROM training_runs WHERE status IN ('queued', 'running')"
        ).fetchone()


def fail_stale_queued_runs(
    conn: psycopg.Connection, *, older_than_seconds: float, reason: str
) -> list[uuid.UUID]:
    """Queued runs no worker picked up in time (a lost message) stop blocking new ones."""
    rows = conn.execute(
        "UPDATE training_runs SET status = 'failed', finished_at = now(), error = %s "
        "WHERE status = 'queued' AND requested_at < now() - make_interval(secs => %s) "
        "RETURNING run_id",
        (reason, older_than_seconds),
    ).fetchall()
    return [row[0] for row in rows]
