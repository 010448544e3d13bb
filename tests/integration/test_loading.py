"""Events out of a real PostgreSQL into columns: every field round-trips, windows filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from offline.loading import load_events, newest_event_time, window_start
from shared.confidence import EVENT_TYPES
from shared.event_store import EventWriter
from shared.events import Event

START = datetime(2025, 10, 30, 12, 0, 0, 123456, tzinfo=UTC)  # spans two monthly partitions


def sample_events() -> list[Event]:
    """Events of every type, ids with commas, quotes, newlines and non-ASCII letters."""
    users = ["u1", "user, with comma", 'say "hi"', "zoë", "line\nbreak"]
    items = ["i1", "item-ü", "i,3"]
    events = []
    for n in range(40):
        kind = EVENT_TYPES[n % len(EVENT_TYPES)]
        value = float(1 + n % 5) if kind == "rating" else (2.5 if n == 3 else None)
        when = START + timedelta(hours=7 * n, microseconds=n)
        events.append(Event(f"e{n}", users[n % 5], items[n % 3], kind, value, when))
    return events


def as_rows(events: list[Event]) -> set[tuple[str, str, str, float | None, float]]:
    return {(e.user_id, e.item_id, e.type, e.value, e.occurred_at.timestamp()) for e in events}


def loaded_rows(
    conn: psycopg.Connection, *, since: datetime | None = None, until: datetime | None = None
) -> set[tuple[str, str, str, float | None, float]]:
    """What load_events returns, as a set of (user, item, type, value, epoch seconds)."""
    columns = load_events(conn, since=since, until=until)
    values = [None if np.isnan(v) else float(v) for v in columns.value]
    return set(
        zip(
            columns.user_ids[columns.user_index].tolist(),
            columns.item_ids[columns.item_index].tolist(),
            [EVENT_TYPES[code] for code in columns.type_code],
            values,
            columns.occurred_at.tolist(),
            strict=True,
        )
    )


def test_every_field_round_trips(conn: psycopg.Connection) -> None:
    events = sample_events()
    EventWriter().write(conn, events)
    columns = load_events(conn)
    assert len(columns) == len(events)
    assert columns.user_index.dtype == columns.item_index.dtype == np.int32
    assert columns.type_code.dtype == np.int8
    assert columns.occurred_at.dtype == np.float64
    assert loaded_rows(conn) == as_rows(events)


def test_dictionaries_are_distinct_and_all_used(conn: psycopg.Connection) -> None:
    EventWriter().write(conn, sample_events())
    columns = load_events(conn, workers=3)
    assert sorted(columns.user_ids.tolist()) == sorted(
        ["u1", "user, with comma", 'say "hi"', "zoë", "line\nbreak"]
    )
    assert len(set(columns.item_ids.tolist())) == len(columns.item_ids) == 3
    assert set(np.unique(columns.user_index).tolist()) == set(range(len(columns.user_ids)))
    assert set(np.unique(columns.item_index).tolist()) == set(range(len(columns.item_ids)))


def test_times_are_exact_to_the_microsecond(conn: psycopg.Connection) -> None:
    events = sample_events()[:3]
    EventWriter().write(conn, events)
    times = sorted(load_events(conn).occurred_at.tolist())
    expected = [e.occurred_at for e in events]
    assert [datetime.fromtimestamp(t, UTC) for t in times] == expected


def test_since_is_inclusive_and_until_exclusive(conn: psycopg.Connection) -> None:
    events = sample_events()
    EventWriter().write(conn, events)
    since, until = events[10].occurred_at, events[30].occurred_at
    assert loaded_rows(conn, since=since, until=until) == as_rows(events[10:30])
    assert loaded_rows(conn, since=since) == as_rows(events[10:])
    assert loaded_rows(conn, until=until) == as_rows(events[:30])


def test_an_empty_window_gives_empty_columns(conn: psycopg.Connection) -> None:
    columns = load_events(conn)
    assert len(columns) == 0
    assert len(columns.user_ids) == 0
    EventWriter().write(conn, sample_events())
    assert len(load_events(conn, since=START + timedelta(days=365))) == 0


def test_newest_event_time_and_window_start(conn: psycopg.Connection) -> None:
    assert newest_event_time(conn) is None
    events = sample_events()
    EventWriter().write(conn, events)
    newest = newest_event_time(conn)
    assert newest == events[-1].occurred_at
    assert window_start(newest, 7) == newest - timedelta(days=7)
    assert window_start(newest, None) is None
    with pytest.raises(ValueError, match="days"):
        window_start(newest, 0)


def many_events(count: int) -> list[Event]:
    """Enough events to fill several heap blocks of two monthly partitions."""
    kinds = EVENT_TYPES[:4]
    return [
        Event(
            f"m{n}",
            f"user-{n % 97}",
            f"item-{n % 31}",
            kinds[n % 4],
            None,
            START + timedelta(minutes=5 * n),
        )
        for n in range(count)
    ]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_many_slices_over_several_connections_lose_nothing(
    conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    import offline.loading

    monkeypatch.setattr(offline.loading, "_HEAP_BLOCKS_PER_QUERY", 2)  # many small slices
    events = many_events(3_000)
    EventWriter().write(conn, events)
    blocks = conn.execute("SELECT count(DISTINCT (ctid::text::point)[0]) FROM events").fetchone()
    assert blocks is not None
    assert blocks[0] > 6
    assert loaded_rows(conn) == as_rows(events)
    columns = load_events(conn, workers=workers, since=events[100].occurred_at)
    assert len(columns) == len(events) - 100
    assert len(columns.user_ids) == 97
    assert len(columns.item_ids) == 31
