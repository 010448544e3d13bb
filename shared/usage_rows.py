"""The serving usage row: its columns, the latency histogram it carries, and its one INSERT.

Latency histogram buckets: LATENCY_BOUNDS_MS are upper bounds (a value equal to a bound falls
in that bucket); the last bucket is open-ended. The SQL function latency_bounds_ms() holds the
same bounds; quantile_ms() matches latency_quantile_ms().
"""

from __future__ import annotations

import os
import uuid
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import datetime

import psycopg

from shared.settings import Settings

LATENCY_BOUNDS_MS: tuple[float, ...] = (
    0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000,
    5000, 10000,
)  # fmt: skip
N_BUCKETS = len(LATENCY_BOUNDS_MS) + 1
_CHUNK_ROWS = 2_000  # x 17 columns stays under PostgreSQL's 65,535 parameters a statement


def bucket_index(latency_ms: float) -> int:
    """The histogram bucket of a latency: the first bound not below it, else the open one."""
    return bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def quantile_ms(counts: Sequence[int], q: float) -> float | None:
    """Latency quantile from bucket counts, linear inside a bucket (None without any count)."""
    total = sum(counts)
    if total == 0:
        return None
    rank, cumulative = q * total, 0
    for i, count in enumerate(counts):
        cumulative += count
        if count > 0 and cumulative >= rank:
            low = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            if i >= len(LATENCY_BOUNDS_MS):
                return low
            high = LATENCY_BOUNDS_MS[i]
            return low + (high - low) * (rank - (cumulative - count)) / count
    return None  # only for q > 1


def vcpus_per_process(settings: Settings) -> float:
    """vCPUs allocated to one API process: the host's serving vCPUs over the processes."""
    vcpus = settings.serving_vcpus or float(os.cpu_count() or 1)
    return vcpus / (settings.serving_processes or settings.workers)


@dataclass(frozen=True)
class UsageRow:
    """One row of inference_usage (fields in column order)."""

    window_start: datetime
    window_end: datetime
    window_seconds: float
    recorder_id: uuid.UUID
    host: str
    pid: int
    route: str
    model_version: str | None
    requests: int
    errors: int
    throttled: int
    items: int
    cpu_seconds: float
    ram_gb_seconds: float
    energy_joules: float
    allocated_vcpu_seconds: float
    latency_buckets: list[int]


COLUMNS = tuple(f.name for f in fields(UsageRow))


def row_values(rows: Iterable[UsageRow]) -> list[object]:
    """The rows' values, flattened in column order, for a multi-row INSERT."""
    return [value for row in rows for value in astuple(row)]


def write_rows(conn: psycopg.Connection, rows: Sequence[UsageRow]) -> int:
    """Insert usage rows: one multi-row INSERT per chunk, all in one transaction.

    A row already written (a retry after a lost commit acknowledgement) is skipped by its key.
    """
    if not rows:
        return 0
    one = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    with conn.transaction():
        for start in range(0, len(rows), _CHUNK_ROWS):
            chunk = rows[start : start + _CHUNK_ROWS]
            conn.execute(
                f"INSERT INTO inference_usage ({', '.join(COLUMNS)}) "
                f"VALUES {', '.join([one] * len(chunk))} "
                "ON CONFLICT ON CONSTRAINT inference_usage_key DO NOTHING",
                row_values(chunk),
            )
    return len(rows)
