"""File imports on a real PostgreSQL: mapping, rejects with line numbers, resumable re-runs.

Over 350 lines on purpose: the bulk import's promises, one test each, on shared fixtures.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shared.event_store import existing_partitions
from shared.importing.columns import ColumnMap
from shared.importing.events import ImportSummary, import_events
from shared.importing.items import ItemColumns, import_items
from shared.importing.readers import ImportConfigError

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

EVENTS_CSV = """\
event_id,user_id,item_id,type,value,occurred_at,session
e1,u1,i1,view,,2025-05-01T10:00:00Z,s1
e2,u1,i2,rating,4.5,2025-05-01T10:01:00+02:00,s1
e3,u2,i1,purchase,2,2025-04-30T23:59:59.5Z,s2
e4,u3,i3,add_to_cart,,2025-05-02T00:00:00Z,s3
"""


@pytest.fixture
def db(clean_database: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the emptied test database (each chunk commits itself)."""
    with psycopg.connect(clean_database, autocommit=True) as connection:
        yield connection


def write(path: Path, text: str, *, compress: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def stored(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT event_id, user_id, item_id, type::text, value, occurred_at FROM events "
        "ORDER BY occurred_at, user_id, item_id"
    ).fetchall()


def rejects_of(summary: ImportSummary) -> list[dict[str, Any]]:
    assert summary.rejects_file is not None
    return [json.loads(line) for line in Path(summary.rejects_file).read_text().splitlines()]


def run(db: psycopg.Connection, path: Path, **options: Any) -> ImportSummary:
    return import_events(db, path, now=NOW, **options)


# --------------------------------------------------------------------------- formats, mapping


def test_csv_columns_named_like_the_api_map_themselves(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    summary = run(db, write(tmp_path / "events.csv", EVENTS_CSV))
    assert (summary.lines, summary.accepted, summary.duplicates, summary.rejected) == (4, 4, 0, 0)
    assert summary.ignored_columns == ["session"]
    assert summary.rejects_file is None
    assert not (tmp_path / "events.csv.rejects.jsonl").exists()
    assert stored(db)[:2] == [
        ("e3", "u2", "i1", "purchase", 2.0, datetime(2025, 4, 30, 23, 59, 59, 500000, UTC)),
        ("e2", "u1", "i2", "rating", 4.5, datetime(2025, 5, 1, 8, 1, tzinfo=UTC)),
    ]


def test_jsonl_and_gzip_by_suffix_or_by_magic_bytes(db: psycopg.Connection, tmp_path: Path) -> None:
    lines = [
        {"event_id": "j1", "user_id": "u1", "item_id": "i1", "type": "view", "extra": 1},
        {"event_id": "j2", "user_id": 7, "item_id": 8, "type": "rating", "value": 3},
        {
            "event_id": "j3",
            "user_id": "u2",
            "item_id": "i2",
            "type": "click",
            "occurred_at": "2025-05-01T00:00:00Z",
        },
    ]
    text = "\n".join(json.dumps(obj) for obj in lines) + "\n\n"
    by_suffix = run(db, write(tmp_path / "a.jsonl.gz", text, compress=True))
    assert (by_suffix.format, by_suffix.accepted, by_suffix.rejected) == ("jsonl", 3, 0)
    assert by_suffix.ignored_columns == ["extra"]
    # Gzip data under a plain .ndjson name: found by its magic bytes; all already stored.
    by_magic = run(db, write(tmp_path / "b.ndjson", text, compress=True))
    assert (by_magic.accepted, by_magic.duplicates) == (0, 3)
    rows = {row[0]: row for row in stored(db)}
    assert rows["j2"][1:5] == ("7", "8", "rating", 3.0)
    assert rows["j1"][5] == NOW  # no time in the file: the import's start time


def test_flag_mapped_retailrocket_log_with_epoch_ms_and_type_map(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "rr.csv",
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,992329,addtocart,248676,\n"
        "1438969904567,1,transaction,5,4000\n",
    )
    columns = ColumnMap(
        user_id="visitorid",
        item_id="itemid",
        type="event",
        occurred_at="timestamp",
        time_format="epoch_ms",
        type_map={"addtocart": "add_to_cart", "transaction": "purchase"},
    )
    summary = run(db, path, columns=columns)
    assert (summary.accepted, summary.rejected) == (3, 0)
    assert summary.ignored_columns == ["transactionid"]
    rows = stored(db)
    assert [row[3] for row in rows] == ["view", "add_to_cart", "purchase"]
    assert rows[0][5] == datetime(2015, 6, 2, 5, 2, 12, 117000, UTC)
    assert all(row[0].startswith("imp-") for row in rows)
    assert {"events_p201506", "events_p201508"} <= existing_partitions(db)


def test_ratings_with_a_constant_type_and_fractional_epoch_seconds(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179.123456\n",
    )
    columns = ColumnMap(
        user_id="userId",
        item_id="movieId",
        value="rating",
        occurred_at="timestamp",
        type_constant="rating",
        time_format="epoch",
    )
    summary = run(db, path, columns=columns)
    assert (summary.accepted, summary.rejected) == (2, 0)
    rows = stored(db)
    assert [(row[3], row[4]) for row in rows] == [("rating", 2.5), ("rating", 3.0)]
    assert rows[1][5] == datetime(2009, 12, 14, 2, 52, 59, 123456, UTC)


def test_renamed_iso_time_column(db: psycopg.Connection, tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "who,what,kind,when\nu1,i1,view,2024-01-31T23:30:00-01:00\n")
    columns = ColumnMap(user_id="who", item_id="what", type="kind", occurred_at="when")
    assert run(db, path, columns=columns).accepted == 1
    assert stored(db)[0][5] == datetime(2024, 2, 1, 0, 30, tzinfo=UTC)
    assert "events_p202402" in existing_partitions(db)


def test_a_missing_required_column_fails_before_reading_rows(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    path = write(tmp_path / "no_user.csv", "visitor,item_id,type\nu1,i1,view\n")
    with pytest.raises(ImportConfigError, match=r"no column 'user_id'.*--user-col"):
        run(db, path)
    with pytest.raises(ImportConfigError, match=r"no column 'ts' for occurred_at"):
        run(db, path, columns=ColumnMap(user_id="visitor", occurred_at="ts"))
    jsonl = write(tmp_path / "no_item.jsonl", '{"user_id": "u1", "type": "view"}\n')
    with pytest.raises(ImportConfigError, match=r"no column 'item_id'"):
        run(db, jsonl)
    assert stored(db) == []
    assert not (tmp_path / "no_user.csv.rejects.jsonl").exists()


# --------------------------------------------------------------------------- rejects


def test_bad_csv_lines_go_to_the_rejects_file_with_their_line_numbers(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    future = (NOW + timedelta(days=1)).isoformat()
    text = (
        "user_id,item_id,type,value,occurred_at\n"  # line 1
        "u1,i1,view,,2025-05-01T00:00:00Z\n"  # 2 good
        "u1,i1,teleport,,2025-05-01T00:00:00Z\n"  # 3 bad type
        ",i2,view,,2025-05-01T00:00:00Z\n"  # 4 missing user
        'u2,"item\nwith newline",click,,2025-05-01T00:00:00Z\n'  # 5-6 good, two lines
        "u3,i3,view,,yesterday\n"  # 7 bad time
        f"u3,i3,view,,{future}\n"  # 8 future
        "u4,i4,rating,,2025-05-01T00:00:00Z\n"  # 9 rating without value
        "u5,i5,view\n"  # 10 too few columns
        "\n"  # 11 blank: not a record
        "u6,i6,purchase,1,2025-05-01T00:00:00Z\n"  # 12 good
    )
    summary = run(db, write(tmp_path / "bad.csv", text))
    assert (summary.lines, summary.accepted, summary.rejected) == (9, 3, 6)
    assert summary.rejects_file == str(tmp_path / "bad.csv.rejects.jsonl")
    rejects = rejects_of(summary)
    assert [r["line"] for r in rejects] == [3, 4, 7, 8, 9, 10]
    reasons = [r["error"] for r in rejects]
    assert reasons[0].startswith("type: Invalid enum value 'teleport'")
    assert reasons[1] == "user_id: required"
    assert reasons[2].startswith("occurred_at: expected an ISO 8601 time")
    assert reasons[3] == "occurred_at: more than 300 seconds in the future"
    assert reasons[4] == "value: required for a rating"
    assert reasons[5] == "expected 5 columns, found 3"
    assert rejects[0]["raw"] == "u1,i1,teleport,,2025-05-01T00:00:00Z"
    assert summary.first_errors[0] == (3, reasons[0])
    assert sorted(row[2] for row in stored(db)) == ["i1", "i6", "item\nwith newline"]


def test_bad_jsonl_lines_are_rejected_and_a_rerun_replaces_the_rejects_file(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    text = (
        '{"user_id": "u1", "item_id": "i1", "type": "view"}\n'
        "{not json\n"
        "[1, 2]\n"
        "\n"
        '{"user_id": "u1", "item_id": "i1", "type": "rating", "value": "x"}\n'
        '{"user_id": "u2", "item_id": "i2", "type": "view", "occurred_at": 1700000000}\n'
    )
    path = tmp_path / "bad.jsonl"
    path.write_bytes(text.encode() + b'{"user_id": "\xff"}\n')
    summary = run(db, path)
    rejects = rejects_of(summary)
    assert [r["line"] for r in rejects] == [2, 3, 5, 6, 7]
    assert rejects[0]["error"].startswith("invalid JSON")
    assert rejects[0]["raw"] == "{not json"
    assert rejects[1]["error"] == "expected a JSON object, found list"
    assert rejects[2]["error"].startswith("value:")
    assert "--time-format epoch" in rejects[3]["error"]
    assert "not valid UTF-8" in rejects[4]["error"]
    assert (summary.accepted, summary.rejected) == (1, 5)
    # The file fixed: the re-run's rejects file no longer holds the first run's rejects.
    write(path, '{"user_id": "u1", "item_id": "i1", "type": "view"}\n')
    again = run(db, path)
    assert (again.duplicates, again.rejected, again.rejects_file) == (1, 0, None)
    assert not Path(str(path) + ".rejects.jsonl").exists()


def test_tab_separated_file_with_a_chosen_rejects_path(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    path = write(tmp_path / "events.tsv", "user_id\titem_id\ttype\nu1\ti1\tview\nu2\ti2\tnope\n")
    chosen = tmp_path / "out" / "bad.jsonl"
    chosen.parent.mkdir()
    summary = run(db, path, file_format="csv", delimiter="\t", rejects_path=chosen)
    assert (summary.accepted, summary.rejected, summary.rejects_file) == (1, 1, str(chosen))
    assert rejects_of(summary)[0]["raw"] == "u2\ti2\tnope"
    with pytest.raises(ImportConfigError, match="must not be the input"):
        run(db, path, file_format="csv", rejects_path=path)


def test_import_refuses_a_connection_inside_a_transaction(
    conn: psycopg.Connection, tmp_path: Path
) -> None:
    conn.execute("SELECT 1")  # opens a transaction: chunks could not commit on their own
    with pytest.raises(ValueError, match="no transaction open"):
        run(conn, write(tmp_path / "e.csv", EVENTS_CSV))


# --------------------------------------------------------------------------- re-runs, chunks


def test_reimporting_a_file_with_ids_stores_nothing_twice(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    path = write(tmp_path / "events.csv.gz", EVENTS_CSV, compress=True)
    first = run(db, path)
    second = run(db, path)
    assert (first.accepted, first.duplicates) == (4, 0)
    assert (second.accepted, second.duplicates) == (0, 4)
    assert len(stored(db)) == 4


def test_an_interrupted_import_resumes_without_duplicates(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    header = "user_id,item_id,type,occurred_at\n"
    rows = [f"u{n % 5},i{n},view,2025-0{1 + n % 5}-01T00:00:{n % 60:02d}Z\n" for n in range(50)]
    part = run(db, write(tmp_path / "part.csv", header + "".join(rows[:23])), chunk_size=7)
    whole = run(db, write(tmp_path / "whole.csv", header + "".join(rows)), chunk_size=7)
    assert (part.accepted, whole.accepted, whole.duplicates) == (23, 27, 23)
    assert len(stored(db)) == 50


def test_the_same_events_formatted_otherwise_get_the_same_derived_ids(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    iso = write(
        tmp_path / "iso.csv",
        "user_id,item_id,type,value,occurred_at\n"
        "u1,i1,rating,4,2025-05-01T02:00:00+02:00\n"
        "u1,i1,rating,4,2025-05-01T02:00:00+02:00\n"  # an exact repeat counts once
        "u2,i2,view,,\n",  # no time: the id leaves the time out
    )
    first = run(db, iso)
    assert (first.accepted, first.duplicates) == (2, 1)
    epoch = write(
        tmp_path / "epoch.jsonl",
        '{"user_id": "u1", "item_id": "i1", "type": "rating", "value": 4.0, '
        '"occurred_at": "1746057600"}\n'
        '{"user_id": "u2", "item_id": "i2", "type": "view"}\n',
    )
    later = import_events(
        db, epoch, columns=ColumnMap(time_format="epoch"), now=NOW + timedelta(hours=1)
    )
    assert (later.accepted, later.duplicates) == (0, 2)
    assert len(stored(db)) == 2


def test_chunks_smaller_than_the_file(db: psycopg.Connection, tmp_path: Path) -> None:
    rows = "".join(
        f"u{n},i{n},{'oops' if n % 10 == 3 else 'view'},2015-{1 + n % 12:02d}-15T00:00:00Z\n"
        for n in range(40)
    )
    path = write(tmp_path / "old.csv", "user_id,item_id,type,occurred_at\n" + rows)
    progress: list[int] = []
    summary = run(db, path, chunk_size=7, progress=progress.append)
    assert (summary.lines, summary.accepted, summary.rejected) == (40, 36, 4)
    assert len(progress) == 6
    assert progress[-1] == path.stat().st_size
    assert [r["line"] for r in rejects_of(summary)] == [5, 15, 25, 35]
    months = {f"events_p2015{m:02d}" for m in range(1, 13)}
    assert months <= existing_partitions(db)


# --------------------------------------------------------------------------- items


def items(db: psycopg.Connection) -> dict[str, tuple[Any, ...]]:
    rows = db.execute("SELECT item_id, category, available, attributes FROM items").fetchall()
    return {row[0]: row[1:] for row in rows}


def test_items_import_upserts_and_rejects_bad_rows(db: psycopg.Connection, tmp_path: Path) -> None:
    path = write(
        tmp_path / "items.csv",
        "sku,category,available,attributes,brand\n"
        'a,shoes,yes,"{""size"": 42}",acme\n'
        "b,hats,0,,\n"
        "c,,maybe,,\n"  # line 4: bad available
        'd,hats,1,"[1]",\n'  # line 5: attributes not an object
        ",hats,1,,\n",  # line 6: no id
    )
    first = import_items(db, path, columns=ItemColumns(item_id="sku"))
    assert (first.lines, first.upserted, first.rejected) == (5, 2, 3)
    assert first.attribute_columns == ["brand"]
    assert items(db) == {
        "a": ("shoes", True, {"size": 42, "brand": "acme"}),
        "b": ("hats", False, {}),
    }
    rejects = [json.loads(line) for line in Path(first.rejects_file or "").read_text().splitlines()]
    assert [(r["line"], r["error"].split(":")[0]) for r in rejects] == [
        (4, "available"),
        (5, "attributes"),
        (6, "item_id"),
    ]
    update = write(
        tmp_path / "items.jsonl",
        '{"item_id": "b", "category": "caps", "available": true, "attributes": {"c": [1]}}\n'
        '{"item_id": "a", "category": "boots", "available": "no", "colour": "red"}\n',
    )
    second = import_items(db, update, chunk_size=1)
    assert (second.upserted, second.rejected) == (2, 0)
    assert items(db) == {"a": ("boots", False, {"colour": "red"}), "b": ("caps", True, {"c": [1]})}


def test_items_import_needs_an_id_column(db: psycopg.Connection, tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "sku,category\na,shoes\n")
    with pytest.raises(ImportConfigError, match=r"no column 'item_id'.*--item-col"):
        import_items(db, path)


# --------------------------------------------------------------------------- the real CLI


def test_the_cli_prints_a_json_summary_and_exits_2_on_a_missing_column(
    clean_database: str, tmp_path: Path
) -> None:
    recsys = Path(sys.executable).parent / "recsys"
    env = {**os.environ, "RECSYS_DATABASE_URL": clean_database, "RECSYS_DATA_DIR": str(tmp_path)}
    path = write(
        tmp_path / "rr.csv.gz", "visitorid,itemid,event\n1,2,addtocart\n3,4,bad\n", compress=True
    )
    done = subprocess.run(
        [
            recsys,
            "events",
            "import",
            str(path),
            "--user-col",
            "visitorid",
            "--item-col",
            "itemid",
            "--type-col",
            "event",
            "--type-map",
            "addtocart=add_to_cart",
            "--chunk-size",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert {k: summary[k] for k in ("format", "lines", "accepted", "rejected")} == {
        "format": "csv",
        "lines": 2,
        "accepted": 1,
        "rejected": 1,
    }
    assert summary["rejects_file"] == str(path) + ".rejects.jsonl"
    assert "line 3: type: Invalid enum value 'bad'" in done.stderr
    assert "imported 1 events" in done.stderr
    failed = subprocess.run(
        [recsys, "events", "import", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 2
    assert "no column 'user_id'" in failed.stderr
