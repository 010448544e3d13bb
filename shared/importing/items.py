"""Bulk import of a catalogue file: each row upserted by item_id (a later row wins), extra
columns kept as attributes, bad rows to the rejects file with their line number.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import orjson
import psycopg

from shared.catalog import ItemIn, convert_item, upsert_items
from shared.events import (
    describe_error,
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
from shared.importing.columns import InvalidRecord, missing_column
from shared.importing.readers import (
    ImportConfigError,
    Record,
    RejectsFile,
    Source,
    open_source,
    rejects_path_for,
)


@dataclass
class ItemImportSummary:
    """What an item import did; `upserted` counts distinct item ids per chunk."""

    file: str
    format: str
    lines: int = 0
    upserted: int = 0
    rejected: int = 0
    rejects_file: str | None = None
    attribute_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0
    first_errors: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary (first_errors go to stderr, not here)."""
        data = asdict(self)
        del data["first_errors"]
        return data


_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


@dataclass(frozen=True)
class ItemColumns:
    """Which column holds the item id and the category (None: `item_id`, `category`).

    `available` and `attributes` (a JSON object) are read by name; every other column becomes
    an attribute (CSV: as a string; empty cells are left out).
    """

    item_id: str | None = None
    category: str | None = None


def map_item(data: Mapping[str, Any], *, item_col: str, category_col: str) -> ItemIn:
    """One row as a validated ItemIn; raises InvalidRecord."""
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    base: dict[str, Any] = {}
    for key, value in data.items():
        if value is None or value == "":
            continue
        if key == item_col:
            fields["item_id"] = str(value) if type(value) is int else value
        elif key == category_col:
            fields["category"] = value
        elif key == "available":
            fields["available"] = _parse_bool(value)
        elif key == "attributes":
            base = _parse_attributes(value)
        else:
            extra[key] = value
    fields["attributes"] = {**base, **extra}
    try:
        item = convert_item(fields)
    except msgspec.ValidationError as exc:
        raise InvalidRecord(describe_error(exc)) from None
    if "\x00" in item.item_id + (item.category or "") + orjson.dumps(item.attributes).decode():
        raise InvalidRecord("NUL characters cannot be stored (\\u0000)")
    return item


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidRecord(f"available: expected true/false/1/0/yes/no, got {value!r}")


def _parse_attributes(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidRecord("attributes: not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidRecord("attributes: expected a JSON object")
    return value


def import_items(
    conn: psycopg.Connection,
    path: Path,
    *,
    columns: ItemColumns | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    rejects_path: Path | None = None,
    file_format: str | None = None,
    delimiter: str = ",",
    progress: Progress | None = None,
) -> ItemImportSummary:
    """Upsert a catalogue file in chunks (one transaction each); a later row for an id wins."""
    started = time.perf_counter()
    path = Path(path)
    check_call(conn, chunk_size)
    columns = columns or ItemColumns()
    item_col, category_col = columns.item_id or "item_id", columns.category or "category"
    rejects_at = rejects_path_for(path, rejects_path)
    with open_source(path, file_format, delimiter=delimiter) as source:
        _check_item_columns(source, columns, item_col)
        summary = ItemImportSummary(str(path), source.format)
        with RejectsFile(rejects_at) as rejects, fewer_collections():

            def prepared() -> Iterator[list[ItemIn]]:
                for records in chunks(source.records, chunk_size):
                    summary.lines += len(records)
                    items = _map_items(records, source, rejects, item_col, category_col)
                    rejects.flush()
                    yield items

            def written(upserted: int) -> None:
                summary.upserted += upserted
                if progress is not None:
                    progress(source.bytes_read())

            write_overlapped(prepared(), partial(upsert_items, conn), written)
        known = {item_col, category_col, "available", "attributes"}
        seen = source.columns if source.format == "csv" else sorted(source.seen_keys)
        summary.attribute_columns = [c for c in seen if c not in known]
    finish_summary(summary, rejects, started)
    return summary


def _map_items(
    records: list[Record], source: Source, rejects: RejectsFile, item_col: str, category_col: str
) -> list[ItemIn]:
    items: list[ItemIn] = []
    for record in records:
        data = record.data
        if data is None:
            rejects.add(record, record.error or "unreadable")
            continue
        row = dict(zip(source.columns, data, strict=True)) if isinstance(data, list) else data
        try:
            items.append(map_item(row, item_col=item_col, category_col=category_col))
        except InvalidRecord as exc:
            rejects.add(record, str(exc))
    return items


def _check_item_columns(source: Source, columns: ItemColumns, item_col: str) -> None:
    """The id column must exist; so must a category column named with --category-col (CSV)."""
    if source.format == "jsonl" and not source.columns:
        return  # no readable object: each line is rejected with its reason
    if item_col not in source.columns:
        raise ImportConfigError(missing_column("item_id", item_col, source.columns, "--item-col"))
    category = columns.category
    if source.format == "csv" and category is not None and category not in source.columns:
        flag = "--category-col"
        raise ImportConfigError(missing_column("category", category, source.columns, flag))
