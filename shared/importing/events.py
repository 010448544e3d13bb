"""Bulk import of an event log (CSV or JSON Lines, gzip or plain), in chunks of one transaction.

Rows are validated with the same rules as the HTTP API (`columns`) and written through the
same COPY writer; ids already stored are skipped, so an interrupted import re-run stores
nothing twice. A consequence, on purpose: rows that describe exactly the same event (same
user, item, type, value and time) count once; the repeats are reported as duplicates.
Rejected rows are never skipped silently: each goes to the rejects file (`readers`) with its
physical line number, the reason and its original text.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from shared.event_store import EventWriter, WriteResult
from shared.events import (
    Event,
    EventRules,
)
from shared.importing.chunks import (
    DEFAULT_CHUNK_SIZE,
    Progress,
    check_call,
    chunks,
    fewer_collections,
    finish_summary,
    write_overlapped,
)
from shared.importing.columns import EVENT_FIELDS, ColumnMap, ColumnPlan, EventMapper, plan_columns
from shared.importing.readers import (
    RejectsFile,
    Source,
    open_source,
    rejects_path_for,
)


@dataclass
class ImportSummary:
    """What an event import did; `lines` counts records (header and blank lines excluded)."""

    file: str
    format: str
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejects_file: str | None = None
    ignored_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0
    events_per_second: float = 0.0  # records processed per second
    first_errors: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary (first_errors go to stderr, not here)."""
        data = asdict(self)
        del data["first_errors"]
        return data


def import_events(
    conn: psycopg.Connection,
    path: Path,
    *,
    columns: ColumnMap | None = None,
    rules: EventRules | None = None,
    writer: EventWriter | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    rejects_path: Path | None = None,
    file_format: str | None = None,
    delimiter: str = ",",
    progress: Progress | None = None,
    now: datetime | None = None,
) -> ImportSummary:
    """Import an event file in chunks of `chunk_size` records, one transaction each.

    `now` (default: the start of the import) is the clock for the future-time rule and the
    time of rows that have none. Raises ImportConfigError before storing anything when the
    options do not fit the file. `conn` must have no transaction open (autocommit is best).
    """
    started = time.perf_counter()
    path = Path(path)
    check_call(conn, chunk_size)
    columns = columns or ColumnMap()
    writer = writer or EventWriter()
    rejects_at = rejects_path_for(path, rejects_path)
    with open_source(path, file_format, delimiter=delimiter) as source:
        plan = _plan_for(columns, source)
        clock = now or datetime.now(UTC)
        mapper = EventMapper(plan, columns, source, rules=rules or EventRules(), now=clock)
        summary = ImportSummary(str(path), source.format)
        with RejectsFile(rejects_at) as rejects, fewer_collections():

            def prepared() -> Iterator[list[Event]]:
                for records in chunks(source.records, chunk_size):
                    summary.lines += len(records)
                    events = mapper.map_chunk(records, rejects)
                    rejects.flush()
                    yield events

            def written(result: WriteResult) -> None:
                summary.accepted += result.accepted
                summary.duplicates += result.duplicates
                if progress is not None:
                    progress(source.bytes_read())

            write_overlapped(prepared(), partial(writer.write, conn), written)
        summary.ignored_columns = _ignored(source, plan)
    finish_summary(summary, rejects, started)
    summary.events_per_second = round(summary.lines / max(summary.seconds, 1e-9), 1)
    return summary


def _plan_for(columns: ColumnMap, source: Source) -> ColumnPlan:
    if source.format == "jsonl" and not source.columns:
        # No readable object at all: every line will be rejected with its own reason.
        return plan_columns(columns, list(EVENT_FIELDS), rows_may_omit=True)
    return plan_columns(columns, source.columns, rows_may_omit=source.format == "jsonl")


def _ignored(source: Source, plan: ColumnPlan) -> list[str]:
    if source.format == "csv":
        return list(plan.ignored)
    used = {column for _, column in plan.pairs}
    return sorted(source.seen_keys - used)
