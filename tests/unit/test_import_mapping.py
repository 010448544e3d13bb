"""Import pieces without a database: options, column plans, epoch times, ids and readers."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.events import Event
from shared.importing.columns import (
    ColumnMap,
    InvalidRecord,
    derived_event_id,
    parse_epoch,
    parse_type_map,
    plan_columns,
)
from shared.importing.items import map_item
from shared.importing.readers import ImportConfigError, detect_format, open_source


def test_type_map_parses_pairs_and_rejects_nonsense() -> None:
    assert parse_type_map("addtocart=add_to_cart, transaction=purchase,") == {
        "addtocart": "add_to_cart",
        "transaction": "purchase",
    }
    with pytest.raises(ImportConfigError, match="not source=target"):
        parse_type_map("addtocart")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"type": "event", "type_constant": "view"}, "not both"),
        ({"type_constant": "like"}, "--type 'like'"),
        ({"type_map": {"addtocart": "cart"}}, "--type-map addtocart=cart"),
        ({"time_format": "unix"}, "--time-format 'unix'"),
    ],
)
def test_column_map_refuses_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ImportConfigError, match=message):
        ColumnMap(**options)  # type: ignore[arg-type]


def test_plan_reads_present_optional_columns_and_lists_the_rest() -> None:
    plan = plan_columns(
        ColumnMap(), ["user_id", "item_id", "type", "value", "x"], rows_may_omit=False
    )
    assert plan.pairs == (
        ("user_id", "user_id"),
        ("item_id", "item_id"),
        ("type", "type"),
        ("value", "value"),
    )
    assert plan.ignored == ("x",)


def test_plan_for_json_lines_reads_optional_keys_the_first_object_lacks() -> None:
    columns = ColumnMap(occurred_at="ts", type_constant="view")
    plan = plan_columns(columns, ["user_id", "item_id"], rows_may_omit=True)
    assert [name for name, _ in plan.pairs] == [
        "event_id",
        "user_id",
        "item_id",
        "value",
        "occurred_at",
    ]
    with pytest.raises(ImportConfigError, match="no column 'ts' for occurred_at"):
        plan_columns(columns, ["user_id", "item_id"], rows_may_omit=False)


@pytest.mark.parametrize(
    ("value", "time_format", "expected"),
    [
        ("1433221332", "epoch", datetime(2015, 6, 2, 5, 2, 12, tzinfo=UTC)),
        (" 1433221332.000001 ", "epoch", datetime(2015, 6, 2, 5, 2, 12, 1, tzinfo=UTC)),
        (1433221332117, "epoch_ms", datetime(2015, 6, 2, 5, 2, 12, 117000, tzinfo=UTC)),
        ("1433221332117.5", "epoch_ms", datetime(2015, 6, 2, 5, 2, 12, 117500, tzinfo=UTC)),
        ("-86400", "epoch", datetime(1969, 12, 31, tzinfo=UTC)),
    ],
)
def test_epoch_times_are_exact(value: object, time_format: str, expected: datetime) -> None:
    assert parse_epoch(value, time_format) == expected


@pytest.mark.parametrize("value", ["abc", "", True, "nan", "1e300", [1]])
def test_bad_epoch_times_are_invalid_records(value: object) -> None:
    with pytest.raises(InvalidRecord, match="occurred_at: "):
        parse_epoch(value, "epoch")


def test_derived_ids_follow_the_normalized_event() -> None:
    utc = datetime(2025, 5, 1, 10, 0, tzinfo=UTC)
    plus_two = utc.astimezone(timezone(timedelta(hours=2)))
    a = Event(None, "u1", "i1", "rating", 4.0, utc)
    b = Event(None, "u1", "i1", "rating", float("4"), plus_two)
    assert derived_event_id(a, timed=True) == derived_event_id(b, timed=True)
    assert derived_event_id(a, timed=True).startswith("imp-")
    assert len(derived_event_id(a, timed=True)) == 36
    assert derived_event_id(a, timed=True) != derived_event_id(a._replace(user_id="u2"), timed=True)
    later = a._replace(occurred_at=utc + timedelta(microseconds=1))
    assert derived_event_id(a, timed=True) != derived_event_id(later, timed=True)
    assert derived_event_id(a, timed=False) == derived_event_id(later, timed=False)


def test_format_comes_from_the_name_through_gz_or_from_the_option() -> None:
    assert detect_format(Path("x.CSV.gz")) == "csv"
    assert detect_format(Path("x.ndjson")) == "jsonl"
    assert detect_format(Path("x.txt"), "jsonl") == "jsonl"
    with pytest.raises(ImportConfigError, match="--format"):
        detect_format(Path("x.txt"))
    with pytest.raises(ImportConfigError, match="unknown format"):
        detect_format(Path("x.csv"), "xml")


def test_csv_records_carry_physical_line_numbers_and_raw_text(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(
        b'\xef\xbb\xbf a , b \r\n1,"two\r\nlines"\r\n\r\n3,4\r\n5\r\n"6"x,1\n7,8\n9,"unclosed\n'
    )
    with open_source(path) as source:
        assert source.columns == ["a", "b"]
        records = list(source.records)
    assert [(r.line, r.data, r.error) for r in records] == [
        (2, ["1", "two\r\nlines"], None),
        (5, ["3", "4"], None),
        (6, None, "expected 2 columns, found 1"),
        (7, None, "CSV: ',' expected after '\"'"),
        (8, ["7", "8"], None),
        (9, None, "CSV: unexpected end of data"),
    ]
    assert records[0].raw == '1,"two\r\nlines"\r\n'


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("twice.csv", b"a,b,a\n", "repeated column names"),
        ("array.json", b"[\n{}\n]\n", "looks like a JSON array"),
    ],
)
def test_unusable_files_fail_up_front(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImportConfigError, match=message), open_source(path):
        pass


def test_a_truncated_gzip_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv.gz"
    rows = b"".join(b"%d,%d\n" % (n, n * n) for n in range(9999))
    path.write_bytes(gzip.compress(b"a,b\n" + rows)[:999])
    with pytest.raises(ImportConfigError, match="gzip data is damaged"), open_source(path) as src:
        list(src.records)


def test_item_rows_map_flags_attributes_and_extra_columns() -> None:
    row = {"id": "a", "cat": "", "available": " No ", "attributes": '{"x": 1}', "brand": "acme"}
    item = map_item(row, item_col="id", category_col="cat")
    assert (item.item_id, item.category, item.available) == ("a", None, False)
    assert item.attributes == {"x": 1, "brand": "acme"}
    with pytest.raises(InvalidRecord, match="available: expected"):
        map_item({"id": "a", "available": "maybe"}, item_col="id", category_col="cat")
    with pytest.raises(InvalidRecord, match="NUL"):
        map_item({"id": "a\x00"}, item_col="id", category_col="cat")
