"""Every validation rule of the event wire format, checked without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from shared.events import EventRules, MalformedBody, validate_batch, validate_fields

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
RULES = EventRules(rating_min=1, rating_max=5, future_tolerance=timedelta(minutes=5))
GOOD: dict[str, Any] = {"user_id": "u1", "item_id": "i1", "type": "view"}


def check(events: list[Any]) -> tuple[int, list[tuple[int, str]]]:
    result = validate_batch(orjson.dumps(events), rules=RULES, now=NOW)
    return len(result.valid), [(r.index, r.error) for r in result.rejected]


@pytest.mark.parametrize("event_type", ["view", "click", "add_to_cart", "purchase"])
def test_every_non_rating_type_is_accepted(event_type: str) -> None:
    assert check([{**GOOD, "type": event_type}]) == (1, [])


def test_rating_needs_a_value_in_the_configured_range() -> None:
    events = [
        {**GOOD, "type": "rating", "value": 4},
        {**GOOD, "type": "rating"},
        {**GOOD, "type": "rating", "value": 0.5},
        {**GOOD, "type": "rating", "value": 5.5},
        {**GOOD, "type": "rating", "value": 1},
        {**GOOD, "type": "rating", "value": 5},
    ]
    valid, rejected = check(events)
    assert valid == 3
    assert [index for index, _ in rejected] == [1, 2, 3]
    assert "required for a rating" in rejected[0][1]
    assert "between 1 and 5" in rejected[1][1]


def test_rating_range_comes_from_the_rules() -> None:
    rules = EventRules(rating_min=0, rating_max=10)
    body = orjson.dumps([{**GOOD, "type": "rating", "value": 9}])
    assert len(validate_batch(body, rules=rules, now=NOW).valid) == 1


def test_unknown_type_is_rejected_and_named() -> None:
    valid, rejected = check([{**GOOD, "type": "like"}])
    assert valid == 0
    assert rejected[0][0] == 0
    assert rejected[0][1].startswith("type:")
    assert "view" in rejected[0][1]


@pytest.mark.parametrize("field", ["user_id", "item_id"])
def test_ids_are_non_empty_strings_of_at_most_256_characters(field: str) -> None:
    events = [
        {**GOOD, field: "x" * 256},
        {**GOOD, field: "x" * 257},
        {**GOOD, field: ""},
        {**GOOD, field: 17},
        {key: value for key, value in GOOD.items() if key != field},
    ]
    valid, rejected = check(events)
    assert valid == 1
    assert [index for index, _ in rejected] == [1, 2, 3, 4]
    assert all(error.startswith(f"{field}:") for _, error in rejected)


def test_event_id_is_optional_but_bounded() -> None:
    valid, rejected = check([{**GOOD, "event_id": "e" * 256}, {**GOOD, "event_id": "e" * 257}])
    assert valid == 1
    assert rejected[0][0] == 1
    assert rejected[0][1].startswith("event_id:")


def test_unknown_fields_are_rejected() -> None:
    valid, rejected = check([{**GOOD, "price": 3}])
    assert valid == 0
    assert rejected == [(0, "price: unknown field")]


def test_occurred_at_needs_a_time_zone() -> None:
    events = [
        {**GOOD, "occurred_at": "2026-06-01T10:00:00+02:00"},
        {**GOOD, "occurred_at": "2026-06-01T10:00:00Z"},
        {**GOOD, "occurred_at": "2026-06-01T10:00:00"},
        {**GOOD, "occurred_at": "yesterday"},
    ]
    valid, rejected = check(events)
    assert valid == 2
    assert [index for index, _ in rejected] == [2, 3]
    assert all(error.startswith("occurred_at:") for _, error in rejected)


def test_occurred_at_at_most_five_minutes_ahead() -> None:
    events = [
        {**GOOD, "occurred_at": (NOW + timedelta(minutes=4, seconds=59)).isoformat()},
        {**GOOD, "occurred_at": (NOW + timedelta(minutes=5, seconds=1)).isoformat()},
    ]
    valid, rejected = check(events)
    assert valid == 1
    assert rejected[0][0] == 1
    assert "future" in rejected[0][1]


def test_occurred_at_defaults_to_now() -> None:
    result = validate_batch(orjson.dumps([GOOD]), rules=RULES, now=NOW)
    assert result.valid[0].occurred_at == NOW


def test_value_must_be_a_number() -> None:
    valid, rejected = check([{**GOOD, "value": "3"}, {**GOOD, "value": 2}])
    assert valid == 1
    assert rejected[0][0] == 0
    assert rejected[0][1].startswith("value:")


def test_a_non_object_item_is_rejected_not_fatal() -> None:
    valid, rejected = check([GOOD, 5, "x", None])
    assert valid == 1
    assert [index for index, _ in rejected] == [1, 2, 3]


def test_valid_events_survive_invalid_neighbours_in_order() -> None:
    events = [{**GOOD, "item_id": f"i{n}"} if n % 2 else {**GOOD, "type": "?"} for n in range(6)]
    result = validate_batch(orjson.dumps(events), rules=RULES, now=NOW)
    assert [e.item_id for e in result.valid] == ["i1", "i3", "i5"]


@pytest.mark.parametrize("body", [b"[", b"{}", b'"events"', b"", b"[1,]", b"null"])
def test_malformed_bodies_raise(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        validate_batch(body, rules=RULES, now=NOW)


def test_import_rows_convert_strings() -> None:
    event = validate_fields(
        {
            "user_id": "u",
            "item_id": "i",
            "type": "rating",
            "value": "4.5",
            "occurred_at": "2024-03-01T00:00:00+00:00",
        },
        rules=RULES,
        now=NOW,
    )
    assert event.value == 4.5
    assert event.occurred_at == datetime(2024, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize("value", [0.5, 1.0, 4.5, 7.0, 10.0])
def test_half_stars_and_one_to_ten_ratings_are_accepted_by_default(value: float) -> None:
    from shared.settings import Settings

    rules = EventRules.from_settings(Settings())
    body = orjson.dumps([{**GOOD, "type": "rating", "value": value}])
    assert len(validate_batch(body, rules=rules, now=NOW).valid) == 1
