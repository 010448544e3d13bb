"""The event log on a real PostgreSQL: partitions on demand, duplicates never stored twice."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg

from shared.event_store import EventWriter, count_events, existing_partitions, month_start
from shared.events import Event

NOW = datetime.now(UTC)


def event(n: int, *, event_id: str | None = "auto", when: datetime = NOW) -> Event:
    eid = f"e{n}" if event_id == "auto" else event_id
    return Event(eid, f"u{n % 7}", f"i{n % 11}", "view", None, when)


def test_writes_every_column(conn: psycopg.Connection) -> None:
    written = Event(
        "abc", "user-1", "item-9", "rating", 4.5, datetime(2025, 2, 3, 4, 5, tzinfo=UTC)
    )
    EventWriter().write(conn, [written])
    row = conn.execute(
        "SELECT event_id, user_id, item_id, type::text, value, occurred_at, received_at FROM events"
    ).fetchone()
    assert row is not None
    assert row[:6] == tuple(written)
    assert abs((row[6] - datetime.now(UTC)).total_seconds()) < 60


def test_duplicates_within_one_batch_are_stored_once(conn: psycopg.Connection) -> None:
    result = EventWriter().write(conn, [event(1), event(2), event(1), event(1)])
    assert (result.accepted, result.duplicates) == (2, 2)
    assert count_events(conn) == 2


def test_duplicates_across_batches_are_stored_once(conn: psycopg.Connection) -> None:
    writer = EventWriter()
    writer.write(conn, [event(n) for n in range(10)])
    result = writer.write(conn, [event(n) for n in range(5, 15)])
    assert (result.accepted, result.duplicates) == (5, 5)
    assert count_events(conn) == 15


def test_a_resent_id_with_another_time_is_still_a_duplicate(conn: psycopg.Connection) -> None:
    writer = EventWriter()
    writer.write(conn, [event(1, when=NOW)])
    result = writer.write(conn, [event(1, when=NOW - timedelta(days=400))])
    assert (result.accepted, result.duplicates) == (0, 1)
    assert count_events(conn) == 1


def test_events_without_ids_get_distinct_generated_ids(conn: psycopg.Connection) -> None:
    result = EventWriter().write(conn, [event(1, event_id=None), event(1, event_id=None)])
    assert (result.accepted, result.duplicates) == (2, 0)
    ids = conn.execute("SELECT event_id FROM events").fetchall()
    assert len({row[0] for row in ids}) == 2


def test_old_and_future_months_get_their_own_partitions(conn: psycopg.Connection) -> None:
    old = datetime(2015, 3, 31, 23, 59, 59, tzinfo=UTC)
    future = datetime(2031, 1, 1, 0, 0, tzinfo=UTC)
    EventWriter().write(conn, [event(1, when=old), event(2, when=future), event(3)])
    partitions = existing_partitions(conn)
    assert {"events_p201503", "events_p203101"} <= partitions
    placed: dict[str, str] = dict(
        conn.execute("SELECT event_id, tableoid::regclass::text FROM events").fetchall()
    )
    assert placed["e1"] == "events_p201503"
    assert placed["e2"] == "events_p203101"


def test_partition_bounds_follow_utc_months(conn: psycopg.Connection) -> None:
    # 00:30 on 1 April in UTC+02:00 is still 31 March in UTC.
    local = datetime(2020, 4, 1, 0, 30, tzinfo=UTC) + timedelta(hours=-2)
    assert month_start(local) == datetime(2020, 3, 1, tzinfo=UTC)
    EventWriter().write(conn, [event(1, when=local)])
    row = conn.execute("SELECT tableoid::regclass::text FROM events").fetchone()
    assert row == ("events_p202003",)


def test_a_partition_dropped_behind_the_writers_back_is_recreated(conn: psycopg.Connection) -> None:
    writer = EventWriter()
    when = datetime(2016, 5, 5, tzinfo=UTC)
    writer.write(conn, [event(1, when=when)])
    conn.execute("DROP TABLE events_p201605")
    conn.commit()
    fresh = EventWriter()
    fresh.write(conn, [event(2, when=when)])
    assert count_events(conn) == 1


def test_concurrent_writers_of_the_same_ids_store_each_once(clean_database: str) -> None:
    batch = [event(n, when=datetime(2012, 1 + n % 12, 1, tzinfo=UTC)) for n in range(300)]
    results = []

    def write() -> None:
        with psycopg.connect(clean_database) as own:
            results.append(EventWriter().write(own, batch))

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.accepted for r in results) == 300
    assert sum(r.duplicates for r in results) == 900
    with psycopg.connect(clean_database) as check:
        assert count_events(check) == 300
