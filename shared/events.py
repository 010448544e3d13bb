"""The event wire format and its validation: pure functions, no I/O.

msgspec decodes and checks a 1,000-event JSON body in well under a millisecond, several
times faster than building pydantic models, which matters on the ingestion hot path.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

from shared.confidence import EVENT_TYPES
from shared.settings import Settings

MAX_ID_LENGTH = 256
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
EventTypeName = Literal["view", "click", "add_to_cart", "purchase", "rating"]


class EventIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One event as a client sends it (JSON) or an import row maps to."""

    user_id: Id
    item_id: Id
    type: EventTypeName
    event_id: Id | None = None
    value: float | None = None
    occurred_at: AwareDatetime | None = None


class Event(NamedTuple):
    """A validated event, ready to store. event_id is None when the client sent none."""

    event_id: str | None
    user_id: str
    item_id: str
    type: str
    value: float | None
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the event at `index` of a batch was not stored."""

    index: int
    error: str


@dataclass(frozen=True)
class EventRules:
    """The configurable parts of validation."""

    rating_min: float = 1.0
    rating_max: float = 5.0
    future_tolerance: timedelta = timedelta(minutes=5)

    @classmethod
    def from_settings(cls, settings: Settings) -> EventRules:
        return cls(
            rating_min=settings.rating_min,
            rating_max=settings.rating_max,
            future_tolerance=timedelta(seconds=settings.future_tolerance_seconds),
        )


class InvalidEvent(ValueError):
    """One event broke a rule; the message says which, in words a client can act on."""


class MalformedBody(ValueError):
    """The request body is not a JSON array."""


@dataclass(frozen=True)
class BatchValidation:
    valid: list[Event]
    rejected: list[Rejection]


_decode_batch = msgspec.json.Decoder(list[EventIn]).decode
_decode_raw_items = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_one = msgspec.json.Decoder(EventIn).decode
_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?:\[\d+\])?\.?(?P<field>[^`]*)`)?$", re.S)


def describe_error(error: msgspec.ValidationError) -> str:
    """msgspec's message as 'field: what is wrong'."""
    match = _PATH.match(str(error))
    assert match is not None  # the pattern matches any string
    field = match.group("field") or "event"
    message = match.group("msg")
    if message.startswith("Object contains unknown field"):
        return f"{message.rsplit(' ', 1)[-1].strip('`')}: unknown field"
    if message.startswith("Invalid enum value"):
        return f"{field}: {message}; expected one of {', '.join(EVENT_TYPES)}"
    if message.startswith("Object missing required field"):
        name = message.rsplit(" ", 1)[-1].strip("`")
        return f"{name}: required"
    return f"{field}: {message}"


def check_rules(event: EventIn, *, rules: EventRules, now: datetime) -> Event:
    """Apply the rules that span fields or depend on settings and the clock."""
    for name, text in (
        ("user_id", event.user_id),
        ("item_id", event.item_id),
        ("event_id", event.event_id or ""),
    ):
        if "\x00" in text:  # PostgreSQL text cannot hold it
            raise InvalidEvent(f"{name}: must not contain the NUL character")
    value = event.value
    if value is not None and not math.isfinite(value):
        raise InvalidEvent("value: must be a finite number")
    if event.type == "rating":
        if value is None:
            raise InvalidEvent("value: required for a rating")
        if not rules.rating_min <= value <= rules.rating_max:
            raise InvalidEvent(
                f"value: a rating must be between {rules.rating_min:g} and {rules.rating_max:g}"
            )
    occurred_at = event.occurred_at
    if occurred_at is None:
        occurred_at = now
    elif occurred_at - now > rules.future_tolerance:
        seconds = rules.future_tolerance.total_seconds()
        raise InvalidEvent(f"occurred_at: more than {seconds:g} seconds in the future")
    return Event(event.event_id, event.user_id, event.item_id, event.type, value, occurred_at)


def validate_fields(fields: dict[str, Any], *, rules: EventRules, now: datetime) -> Event:
    """Validate one event given as a mapping of strings or JSON values (an import row)."""
    try:
        parsed = msgspec.convert(fields, EventIn, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(describe_error(exc)) from None
    return check_rules(parsed, rules=rules, now=now)


def validate_batch(
    body: bytes, *, rules: EventRules, now: datetime | None = None
) -> BatchValidation:
    """Validate a JSON array of events; valid ones are kept even when others are not."""
    now = now or datetime.now(UTC)
    try:
        parsed = _decode_batch(body)
    except msgspec.DecodeError:
        # Malformed JSON or at least one bad event: check them one at a time.
        return _validate_one_by_one(body, rules=rules, now=now)
    valid: list[Event] = []
    rejected: list[Rejection] = []
    for index, event in enumerate(parsed):
        try:
            valid.append(check_rules(event, rules=rules, now=now))
        except InvalidEvent as exc:
            rejected.append(Rejection(index, str(exc)))
    return BatchValidation(valid, rejected)


def _validate_one_by_one(body: bytes, *, rules: EventRules, now: datetime) -> BatchValidation:
    try:
        items = _decode_raw_items(body)
    except msgspec.ValidationError:
        raise MalformedBody("the body must be a JSON array of event objects") from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None
    valid: list[Event] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(items):
        try:
            valid.append(check_rules(_decode_one(raw), rules=rules, now=now))
        except msgspec.ValidationError as exc:
            rejected.append(Rejection(index, describe_error(exc)))
        except InvalidEvent as exc:
            rejected.append(Rejection(index, str(exc)))
    return BatchValidation(valid, rejected)


def event_json_schema() -> dict[str, Any]:
    """JSON Schema of a batch, for the OpenAPI document."""
    schema: dict[str, Any] = msgspec.json.schema(list[EventIn])
    return schema
