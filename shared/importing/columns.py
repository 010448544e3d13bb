"""Column mapping: a file's columns -> the API's event fields, and each row -> a validated Event.

The same rules as the HTTP API apply to every row; a row that breaks one is an InvalidRecord
with the reason. Events without an id in the file get one derived from their content, so a
re-run of an interrupted import stores nothing twice (`derived_event_id`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any, Literal

import msgspec

from shared.confidence import EVENT_TYPES
from shared.events import (
    Event,
    EventIn,
    EventRules,
    InvalidEvent,
    check_rules,
    validate_fields,
)
from shared.importing.readers import (
    ImportConfigError,
    Record,
    RejectsFile,
    Source,
)

TimeFormat = Literal["iso", "epoch", "epoch_ms"]
TIME_FORMATS: tuple[TimeFormat, ...] = ("iso", "epoch", "epoch_ms")
_REQUIRED = ("user_id", "item_id", "type")
EVENT_FIELDS = ("event_id", "user_id", "item_id", "type", "value", "occurred_at")
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


class InvalidRecord(ValueError):
    """One row broke a rule; the message says which."""


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
    for name in EVENT_FIELDS:
        if name == "type" and columns.type_constant is not None:
            continue
        explicit: str | None = getattr(columns, name)
        column = explicit or name
        present = column in available
        if not present and (name in _REQUIRED or (explicit and not rows_may_omit)):
            raise ImportConfigError(missing_column(name, column, available, _FLAGS[name]))
        if present or rows_may_omit:
            pairs.append((name, column))
    used = {column for _, column in pairs}
    return ColumnPlan(tuple(pairs), tuple(c for c in available if c not in used))


def missing_column(name: str, column: str, available: Sequence[str], flag: str) -> str:
    listed = ", ".join(available) or "none"
    return f"no column {column!r} for {name} (columns: {listed}); name one with {flag}"


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
