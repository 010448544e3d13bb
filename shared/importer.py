"""Bulk import of event logs and catalogues from CSV or JSON Lines files (gzip or plain).

Rows are validated with the same rules as the HTTP API and written in chunks, one transaction
per chunk, so an interrupted import keeps what it committed and a re-run stores nothing twice:
events without an id in the file get one derived from their validated content (see
`derived_event_id`), and ids already stored are skipped. A consequence, on purpose: rows that
describe exactly the same event (same user, item, type, value and time) count once; the
repeats are reported as duplicates.

Rejected rows are never skipped silently: each goes to the rejects file (see
shared/import_readers.py) with its physical line number, the reason and its original text.
"""

from __future__ import annotations

import gc
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import orjson
import psycopg
from psycopg.pq import TransactionStatus

from shared.catalog import ItemIn, convert_item, upsert_items
from shared.event_store import EventWriter, WriteResult
from shared.events import (
    Event,
    EventIn,
    EventRules,
    InvalidEvent,
    check_rules,
    describe_error,
    validate_fields,
)
from shared.import_readers import (
    ImportConfigError,
    Record,
    RejectsFile,
    Source,
    open_source,
    rejects_path_for,
)
from shared.settings import EVENT_TYPES

__all__ = [
    "ColumnMap",
    "ImportConfigError",
    "ImportSummary",
    "ItemColumns",
    "ItemImportSummary",
    "derived_event_id",
    "import_events",
    "import_items",
    "parse_epoch",
    "parse_type_map",
]

DEFAULT_CHUNK_SIZE = 50_000
TimeFormat = Literal["iso", "epoch", "epoch_ms"]
TIME_FORMATS: tuple[TimeFormat, ...] = ("iso", "epoch", "epoch_ms")
Progress = Callable[[int], None]  # called after each chunk with the bytes of the file read

_REQUIRED = ("user_id", "item_id", "type")
_EVENT_FIELDS = ("event_id", "user_id", "item_id", "type", "value", "occurred_at")
_FLAGS = {
    "event_id": "--event-id-col",
    "user_id": "--user-col",
    "item_id": "--item-col",
    "type": "--type-col or --type",
    "value": "--value-col",
    "occurred_at": "--time-col",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MICROS_PER_UNIT = {"epoch": 1_000_000, "epoch_ms": 1_000}
_CONVERT_BATCH = 1_000  # rows per msgspec call; a failing batch is redone row by row
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
T = TypeVar("T")
C = TypeVar("C")
R = TypeVar("R")


class InvalidRecord(ValueError):
    """One row broke a rule; the message says which."""


# --------------------------------------------------------------------------- column mapping


@dataclass(frozen=True)
class ColumnMap:
    """Which file column feeds which event field; None means the field's own name.

    `type_constant` gives every row the same type (a ratings file); `type_map` renames the
    file's type values (RetailRocket's addtocart -> add_to_cart) before validation.
    """

    event_id: str | None = None
    user_id: str | None = None
    item_id: str | None = None
    type: str | None = None
    value: str | None = None
    occurred_at: str | None = None
    type_constant: str | None = None
    time_format: TimeFormat = "iso"
    type_map: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type is not None and self.type_constant is not None:
            raise ImportConfigError("give either --type-col or --type, not both")
        if self.type_constant is not None and self.type_constant not in EVENT_TYPES:
            raise ImportConfigError(f"--type {self.type_constant!r}: {_expected_types()}")
        if self.time_format not in TIME_FORMATS:
            message = f"--time-format {self.time_format!r}: use iso, epoch or epoch_ms"
            raise ImportConfigError(message)
        for source, target in self.type_map.items():
            if target not in EVENT_TYPES:
                raise ImportConfigError(f"--type-map {source}={target}: {_expected_types()}")


@dataclass(frozen=True)
class ColumnPlan:
    """The (field, column) pairs to read from each row, and the columns left unread."""

    pairs: tuple[tuple[str, str], ...]
    ignored: tuple[str, ...]


def _expected_types() -> str:
    return f"expected one of {', '.join(EVENT_TYPES)}"


def parse_type_map(text: str) -> dict[str, str]:
    """`addtocart=add_to_cart,transaction=purchase` as a dict (targets checked by ColumnMap)."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        source, sep, target = part.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ImportConfigError(f"--type-map: {part!r} is not source=target")
        mapping[source.strip()] = target.strip()
    return mapping


def plan_columns(
    columns: ColumnMap, available: Sequence[str], *, rows_may_omit: bool
) -> ColumnPlan:
    """Match fields to columns; a missing required column is an error before any row is read.

    `rows_may_omit` is true for JSON Lines, where `available` comes from the first object and
    later objects may leave out optional keys (a view has no value): those are always read.
    """
    pairs: list[tuple[str, str]] = []
    for name in _EVENT_FIELDS:
        if name == "type" and columns.type_constant is not None:
            continue
        explicit: str | None = getattr(columns, name)
        column = explicit or name
        present = column in available
        if not present and (name in _REQUIRED or (explicit and not rows_may_omit)):
            raise ImportConfigError(_missing_column(name, column, available, _FLAGS[name]))
        if present or rows_may_omit:
            pairs.append((name, column))
    used = {column for _, column in pairs}
    return ColumnPlan(tuple(pairs), tuple(c for c in available if c not in used))


def _missing_column(name: str, column: str, available: Sequence[str], flag: str) -> str:
    listed = ", ".join(available) or "none"
    return f"no column {column!r} for {name} (columns: {listed}); name one with {flag}"


# --------------------------------------------------------------------------- row -> event


def parse_epoch(value: Any, time_format: str) -> datetime:
    """Seconds (may be fractional) or milliseconds since 1970 as a UTC datetime, exactly.

    Decimal keeps every digit of "1433221332.123456", which a float would round.
    """
    unit = "milliseconds" if time_format == "epoch_ms" else "seconds"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRecord(f"occurred_at: expected epoch {unit}, got {value!r}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise InvalidRecord(f"occurred_at: expected epoch {unit}, got {value!r}") from None
    if not number.is_finite() or number.adjusted() > 15:
        raise InvalidRecord(f"occurred_at: epoch {unit} out of range: {value!r}")
    micros = int((number * _MICROS_PER_UNIT[time_format]).to_integral_value())
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise InvalidRecord(f"occurred_at: epoch {unit} out of range: {value!r}") from None


def derived_event_id(event: Event, *, timed: bool) -> str:
    """A stable id from the validated event, so re-importing a file stores nothing twice.

    Built from normalized values (the float value; the time as whole microseconds since 1970,
    whatever its offset), so the same event written with other formatting gets the same id.
    A row without a time is stored at the import's start time, which differs per run, so its
    id leaves the time out (`timed=False`).
    """
    when = str((event.occurred_at - _EPOCH) // _MICROSECOND) if timed else ""
    value = "" if event.value is None else repr(event.value)
    key = "\x1f".join((event.user_id, event.item_id, event.type, value, when))
    return "imp-" + hashlib.sha256(key.encode()).hexdigest()[:32]


class EventMapper:
    """Turns a chunk of records into validated Events with ids, rejecting the bad ones.

    Validation is the API's (EventIn in lax mode, then check_rules); records are converted
    by msgspec a batch at a time, which costs a third of converting them one by one, and a
    batch holding a bad record is redone one by one to name each record's problem.
    """

    def __init__(
        self,
        plan: ColumnPlan,
        columns: ColumnMap,
        source: Source,
        *,
        rules: EventRules,
        now: datetime,
    ) -> None:
        self.columns = columns
        self.rules = rules
        self.now = now
        self._names = tuple(name for name, _ in plan.pairs)
        self._get = _getter(source, [column for _, column in plan.pairs])
        self._csv = source.format == "csv"

    def map_chunk(self, records: list[Record], rejects: RejectsFile) -> list[Event]:
        prepared: list[tuple[Record, dict[str, Any]]] = []
        for record in records:
            if record.data is None:
                rejects.add(record, record.error or "unreadable")
                continue
            try:
                prepared.append((record, self.fields(record.data)))
            except InvalidRecord as exc:
                rejects.add(record, str(exc))
        events: list[Event] = []
        for start in range(0, len(prepared), _CONVERT_BATCH):
            batch = prepared[start : start + _CONVERT_BATCH]
            self._validate(batch, events, rejects)
        return events

    def fields(self, data: list[str] | dict[str, Any]) -> dict[str, Any]:
        """The mapped, non-empty values; JSON integer ids as strings; type and time converted."""
        fields = self._from_csv(data) if self._csv else self._from_json(data)
        columns = self.columns
        if columns.type_constant is not None:
            fields["type"] = columns.type_constant
        elif columns.type_map and isinstance(kind := fields.get("type"), str):
            fields["type"] = columns.type_map.get(kind, kind)
        when = fields.get("occurred_at")
        if when is None:
            return fields
        if columns.time_format != "iso":
            fields["occurred_at"] = parse_epoch(when, columns.time_format)
        elif type(when) is not str or when[4:5] != "-":
            # msgspec's lax mode would read a number as epoch seconds: --time-format says.
            raise InvalidRecord(
                f"occurred_at: expected an ISO 8601 time like 2025-05-01T10:00:00Z, got {when!r}"
                " (for epoch times pass --time-format epoch or epoch_ms)"
            )
        return fields

    def _from_csv(self, row: Any) -> dict[str, Any]:
        return {name: text for name, text in zip(self._names, self._get(row), strict=True) if text}

    def _from_json(self, data: Any) -> dict[str, Any]:
        fields = {
            name: value
            for name, value in zip(self._names, self._get(data), strict=True)
            if value is not None and value != ""
        }
        for name in ("event_id", "user_id", "item_id"):
            if type(fields.get(name)) is int:
                fields[name] = str(fields[name])
        return fields

    def _validate(
        self, batch: list[tuple[Record, dict[str, Any]]], out: list[Event], rejects: RejectsFile
    ) -> None:
        try:
            parsed = msgspec.convert([f for _, f in batch], list[EventIn], strict=False)
        except msgspec.ValidationError:
            parsed = None
        for index, (record, fields) in enumerate(batch):
            try:
                if parsed is None:
                    event = validate_fields(fields, rules=self.rules, now=self.now)
                else:
                    event = check_rules(parsed[index], rules=self.rules, now=self.now)
                out.append(_with_id(event, timed="occurred_at" in fields))
            except (InvalidEvent, InvalidRecord) as exc:
                rejects.add(record, str(exc))


def _getter(source: Source, columns: list[str]) -> Callable[[Any], Sequence[Any]]:
    """Pick the columns' values from a row: by index from a CSV list, by key from an object."""
    if source.format == "csv":
        return itemgetter(*(source.columns.index(c) for c in columns))

    def from_object(data: dict[str, Any]) -> list[Any]:
        return [data.get(c) for c in columns]

    return from_object


def _with_id(event: Event, *, timed: bool) -> Event:
    """The event with its derived id when the file gave none; ids must have no NUL."""
    if "\x00" in event.user_id or "\x00" in event.item_id or "\x00" in (event.event_id or ""):
        raise InvalidRecord("ids must not contain NUL characters (PostgreSQL cannot store them)")
    if event.event_id is not None:
        return event
    event_id = derived_event_id(event, timed=timed)
    return Event(event_id, event.user_id, event.item_id, event.type, event.value, event.occurred_at)


# --------------------------------------------------------------------------- summaries


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


# --------------------------------------------------------------------------- event import


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
    _check_call(conn, chunk_size)
    columns = columns or ColumnMap()
    writer = writer or EventWriter()
    rejects_at = rejects_path_for(path, rejects_path)
    with open_source(path, file_format, delimiter=delimiter) as source:
        plan = _plan_for(columns, source)
        clock = now or datetime.now(UTC)
        mapper = EventMapper(plan, columns, source, rules=rules or EventRules(), now=clock)
        summary = ImportSummary(str(path), source.format)
        with RejectsFile(rejects_at) as rejects, _fewer_collections():

            def prepared() -> Iterator[list[Event]]:
                for records in _chunks(source.records, chunk_size):
                    summary.lines += len(records)
                    events = mapper.map_chunk(records, rejects)
                    rejects.flush()
                    yield events

            def written(result: WriteResult) -> None:
                summary.accepted += result.accepted
                summary.duplicates += result.duplicates
                if progress is not None:
                    progress(source.bytes_read())

            _write_overlapped(prepared(), partial(writer.write, conn), written)
        summary.ignored_columns = _ignored(source, plan)
    _finish(summary, rejects, started)
    summary.events_per_second = round(summary.lines / max(summary.seconds, 1e-9), 1)
    return summary


def _plan_for(columns: ColumnMap, source: Source) -> ColumnPlan:
    if source.format == "jsonl" and not source.columns:
        # No readable object at all: every line will be rejected with its own reason.
        return plan_columns(columns, list(_EVENT_FIELDS), rows_may_omit=True)
    return plan_columns(columns, source.columns, rows_may_omit=source.format == "jsonl")


def _ignored(source: Source, plan: ColumnPlan) -> list[str]:
    if source.format == "csv":
        return list(plan.ignored)
    used = {column for _, column in plan.pairs}
    return sorted(source.seen_keys - used)


def _write_overlapped(
    chunks: Iterator[C], write: Callable[[C], R], written: Callable[[R], None]
) -> None:
    """Write each chunk on a helper thread while the next one is read and validated.

    The database's share of a chunk (claiming ids, COPY, commit) is mostly waiting, with the
    GIL released, so it overlaps the parsing. At most one chunk is being written while the
    next is prepared, so memory stays bounded. On an error or Ctrl-C the write under way is
    finished (committed or rolled back) before this returns.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-writer") as pool:
        pending: Future[R] | None = None
        for chunk in chunks:
            if pending is not None:
                written(pending.result())
            pending = pool.submit(write, chunk)
        if pending is not None:
            written(pending.result())


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while importing.

    A chunk allocates millions of short-lived, acyclic objects while the chunk itself stays
    alive, and the default (a collection every 700 allocations) costs about 15% of the time.
    """
    before = gc.get_threshold()
    gc.set_threshold(50_000, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(items, size)):
        yield chunk


def _check_call(conn: psycopg.Connection, chunk_size: int) -> None:
    """Refuse what cannot work before touching the file or the database.

    Each chunk must commit on its own, so the caller must not hold a transaction open.
    """
    if chunk_size < 1:
        raise ImportConfigError("--chunk-size must be at least 1")
    if not conn.autocommit and conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("import needs a connection with no transaction open")


def _finish(
    summary: ImportSummary | ItemImportSummary, rejects: RejectsFile, started: float
) -> None:
    summary.rejected = rejects.count
    summary.rejects_file = str(rejects.path) if rejects.count else None
    summary.first_errors = rejects.sample
    summary.seconds = round(time.perf_counter() - started, 3)


# --------------------------------------------------------------------------- item import


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
    _check_call(conn, chunk_size)
    columns = columns or ItemColumns()
    item_col, category_col = columns.item_id or "item_id", columns.category or "category"
    rejects_at = rejects_path_for(path, rejects_path)
    with open_source(path, file_format, delimiter=delimiter) as source:
        _check_item_columns(source, columns, item_col)
        summary = ItemImportSummary(str(path), source.format)
        with RejectsFile(rejects_at) as rejects, _fewer_collections():

            def prepared() -> Iterator[list[ItemIn]]:
                for records in _chunks(source.records, chunk_size):
                    summary.lines += len(records)
                    items = _map_items(records, source, rejects, item_col, category_col)
                    rejects.flush()
                    yield items

            def written(upserted: int) -> None:
                summary.upserted += upserted
                if progress is not None:
                    progress(source.bytes_read())

            _write_overlapped(prepared(), partial(upsert_items, conn), written)
        known = {item_col, category_col, "available", "attributes"}
        seen = source.columns if source.format == "csv" else sorted(source.seen_keys)
        summary.attribute_columns = [c for c in seen if c not in known]
    _finish(summary, rejects, started)
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
        raise ImportConfigError(_missing_column("item_id", item_col, source.columns, "--item-col"))
    category = columns.category
    if source.format == "csv" and category is not None and category not in source.columns:
        flag = "--category-col"
        raise ImportConfigError(_missing_column("category", category, source.columns, flag))
