"""POST /v1/events and PUT /v1/items through the ASGI app, on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from online.main import create_app
from shared.event_store import count_events
from shared.settings import Settings

GOOD: dict[str, Any] = {"user_id": "u1", "item_id": "i1", "type": "view"}


@pytest.fixture
def client(redis_settings: Settings, auth_headers: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(redis_settings), headers=auth_headers) as test_client:
        yield test_client


def stored(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return count_events(conn)


def test_a_mixed_batch_stores_the_valid_events_and_lists_the_rest(
    client: TestClient, settings: Settings
) -> None:
    events = [
        {**GOOD, "event_id": "a"},
        {**GOOD, "type": "nope"},
        {**GOOD, "event_id": "b", "type": "rating", "value": 5},
        {**GOOD, "type": "rating"},
    ]
    response = client.post("/v1/events", json=events)
    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] == 2
    assert answer["duplicates"] == 0
    assert [r["index"] for r in answer["rejected"]] == [1, 3]
    assert all(r["error"] for r in answer["rejected"])
    assert stored(settings.require_database_url()) == 2


def test_duplicates_within_and_across_batches(client: TestClient, settings: Settings) -> None:
    first = client.post("/v1/events", json=[{**GOOD, "event_id": "x"}, {**GOOD, "event_id": "x"}])
    assert first.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    again = client.post("/v1/events", json=[{**GOOD, "event_id": "x"}, {**GOOD, "event_id": "y"}])
    assert again.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert stored(settings.require_database_url()) == 2


def test_a_batch_with_nothing_valid_is_422_and_stores_nothing(
    client: TestClient, settings: Settings
) -> None:
    response = client.post("/v1/events", json=[{**GOOD, "user_id": ""}, {"type": "view"}])
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == 0
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    assert stored(settings.require_database_url()) == 0


def test_an_empty_array_is_422(client: TestClient) -> None:
    assert client.post("/v1/events", json=[]).status_code == 422


@pytest.mark.parametrize("body", [b"[{", b"not json", b'{"user_id": "u"}', b"42"])
def test_malformed_json_is_400(client: TestClient, body: bytes) -> None:
    response = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_body"


def test_more_events_than_the_limit_is_413(
    settings: Settings, auth_headers: dict[str, str]
) -> None:
    small = settings.model_copy(update={"max_batch_events": 3})
    with TestClient(create_app(small), headers=auth_headers) as client:
        response = client.post("/v1/events", json=[GOOD] * 4)
        assert response.status_code == 413
        assert client.post("/v1/events", json=[GOOD] * 3).status_code == 200


def test_a_body_over_the_byte_limit_is_413_and_stores_nothing(
    settings: Settings, auth_headers: dict[str, str]
) -> None:
    small = settings.model_copy(update={"max_body_bytes": 1024})
    with TestClient(create_app(small), headers=auth_headers) as client:
        response = client.post("/v1/events", json=[GOOD] * 100)
        assert response.status_code == 413
    assert stored(settings.require_database_url()) == 0


def test_the_default_limit_is_ten_thousand_events(client: TestClient) -> None:
    response = client.post("/v1/events", json=[{**GOOD, "item_id": f"i{n}"} for n in range(10_001)])
    assert response.status_code == 413


def test_future_and_naive_timestamps_are_rejected(client: TestClient) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=2)
    later = datetime.now(UTC) + timedelta(minutes=10)
    events = [
        {**GOOD, "occurred_at": soon.isoformat()},
        {**GOOD, "occurred_at": later.isoformat()},
        {**GOOD, "occurred_at": "2026-01-01T00:00:00"},
    ]
    answer = client.post("/v1/events", json=events).json()
    assert answer["accepted"] == 1
    assert [r["index"] for r in answer["rejected"]] == [1, 2]


def test_old_events_land_in_their_month(client: TestClient, settings: Settings) -> None:
    answer = client.post(
        "/v1/events", json=[{**GOOD, "occurred_at": "2014-07-04T12:00:00-07:00"}]
    ).json()
    assert answer["accepted"] == 1
    with psycopg.connect(settings.require_database_url()) as conn:
        row = conn.execute("SELECT tableoid::regclass::text FROM events").fetchone()
    assert row == ("events_p201407",)


def test_items_are_upserted(client: TestClient, settings: Settings) -> None:
    first = client.put(
        "/v1/items",
        json=[
            {"item_id": "sku-1", "category": "shoes", "attributes": {"brand": "x"}},
            {"item_id": "sku-2", "available": False},
            {"item_id": "", "category": "bad"},
        ],
    )
    assert first.status_code == 200
    assert first.json()["upserted"] == 2
    assert [r["index"] for r in first.json()["rejected"]] == [2]
    second = client.put(
        "/v1/items", json=[{"item_id": "sku-1", "category": "boots", "available": False}]
    )
    assert second.json() == {"upserted": 1, "rejected": []}
    with psycopg.connect(settings.require_database_url()) as conn:
        rows = conn.execute(
            "SELECT item_id, category, available, attributes FROM items ORDER BY item_id"
        ).fetchall()
    assert rows == [("sku-1", "boots", False, {}), ("sku-2", None, False, {})]


def test_items_with_unknown_fields_or_bad_types_are_rejected(client: TestClient) -> None:
    response = client.put(
        "/v1/items", json=[{"item_id": "a", "price": 3}, {"item_id": "b", "available": "maybe"}]
    )
    assert response.status_code == 422
    errors = [r["error"] for r in response.json()["rejected"]]
    assert errors[0] == "price: unknown field"
    assert errors[1].startswith("available:")


def test_the_openapi_document_describes_the_event_body(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    item = body["schema"]["items"]
    assert set(item["required"]) == {"user_id", "item_id", "type"}
    assert item["additionalProperties"] is False


def test_database_outage_is_503_not_500(settings: Settings, auth_headers: dict[str, str]) -> None:
    unreachable = settings.model_copy(
        update={"database_url": "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1"}
    )
    app = create_app(unreachable)
    with TestClient(app, headers=auth_headers) as client:
        app.state.pool.timeout = 1
        response = client.post("/v1/events", json=[GOOD])
        assert response.status_code == 503
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
