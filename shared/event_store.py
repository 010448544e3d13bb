"""SQL for the event log: monthly partitions on demand, duplicate-free bulk writes via COPY."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from shared.db import LOCK_PARTITIONS
from shared.events import Event

# Binary COPY: the server parses no text timestamps and the client formats no strings.
# An enum column accepts its label sent as binary text.
_COPY_EVENTS = (
    "COPY events (event_id, user_id, item_id, type, value, occurred_at) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["text", "text", "text", "text", "float8", "timestamptz"]
_COPY_IDS = "COPY event_ids (event_id) FROM STDIN (FORMAT BINARY)"
_CLAIM_IDS = (
    "INSERT INTO event_ids (event_id) SELECT unnest(%s::text[]) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


@dataclass(frozen=True)
class WriteResult:
    accepted: int
    duplicates: int
    stored: list[Event] = field(default_factory=list)  # as written (generated ids filled in)


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of the calendar month holding `moment`."""
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def months_of(moments: Iterable[datetime]) -> set[datetime]:
    """The distinct UTC months of many moments (cheap for the usual UTC timestamps)."""
    months: set[tuple[int, int]] = set()
    for moment in moments:
        if moment.tzinfo is not UTC:
            moment = moment.astimezone(UTC)
        months.add((moment.year, moment.month))
    return {datetime(year, month, 1, tzinfo=UTC) for year, month in months}


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"events_p{start.year:04d}{start.month:02d}"


@dataclass
class EventWriter:
    """Writes validated events; remembers which monthly partitions exist (one per process)."""

    known_partitions: set[str] = field(default_factory=set)

    def write(self, conn: psycopg.Connection, events: Sequence[Event]) -> WriteResult:
        """Store events in one transaction; client ids seen before (or twice here) are skipped."""
        if not events:
            return WriteResult(0, 0)
        self.ensure_partitions(conn, (event.occurred_at for event in events))
        unique, repeated = _drop_repeats(events)
        with conn.transaction():
            claimed = claim_event_ids(conn, [e.event_id for e in unique if e.event_id is not None])
            with conn.cursor() as cur, cur.copy(_COPY_EVENTS) as copy:
                copy.set_types(_COPY_TYPES)
                stored: list[Event] = []
                for e in unique:
                    if e.event_id is None:
                        e = e._replace(event_id=_new_id())
                    elif e.event_id not in claimed:
                        continue
                    copy.write_row(e)
                    stored.append(e)
        return WriteResult(len(stored), repeated + len(unique) - len(stored), stored)

    def ensure_partitions(self, conn: psycopg.Connection, moments: Iterable[datetime]) -> None:
        """Create the monthly partitions these moments fall in, if missing (in its own commit)."""
        starts = months_of(moments)
        missing = [s for s in starts if partition_name(s) not in self.known_partitions]
        if not missing:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_PARTITIONS,))
            self.known_partitions |= existing_partitions(conn)
            for start in missing:
                name = partition_name(start)
                if name not in self.known_partitions:
                    conn.execute(_create_partition_sql(start))
        self.known_partitions |= {partition_name(s) for s in missing}


def claim_event_ids(conn: psycopg.Connection, event_ids: list[str]) -> set[str]:
    """Record ids never seen before and return them; the caller stores only those events.

    A plain COPY costs about half of an ON CONFLICT insert, so it is tried first inside a
    savepoint; a batch holding an already-stored id (a client retry) takes the slower path.
    """
    if not event_ids:
        return set()
    try:
        with conn.transaction(), conn.cursor() as cur, cur.copy(_COPY_IDS) as copy:
            copy.set_types(["text"])
            for event_id in event_ids:
                copy.write_row((event_id,))
        return set(event_ids)
    except psycopg.errors.UniqueViolation:
        with conn.cursor() as cur:
            cur.execute(_CLAIM_IDS, (event_ids,))
            return {row[0] for row in cur.fetchall()}


def existing_partitions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass"
    ).fetchall()
    return {row[0] for row in rows}


def _create_partition_sql(start: datetime) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF events FOR VALUES FROM ({}) TO ({})"
    ).format(
        sql.Identifier(partition_name(start)), sql.Literal(start), sql.Literal(next_month(start))
    )


def _drop_repeats(events: Sequence[Event]) -> tuple[list[Event], int]:
    """Keep the first event of each client id within one batch."""
    seen: set[str] = set()
    unique: list[Event] = []
    for event in events:
        if event.event_id is not None:
            if event.event_id in seen:
                continue
            seen.add(event.event_id)
        unique.append(event)
    return unique, len(events) - len(unique)


def _new_id() -> str:
    """An id for an event the client sent without one (128 random bits)."""
    return secrets.token_hex(16)


def count_events(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0
