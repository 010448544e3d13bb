"""Before any version is published, the shop still gets answers: popular-now lists from the
event log (source "popular"), never a 503 just because no retrain has succeeded yet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from fastapi.testclient import TestClient

from online.main import create_app
from shared.event_store import EventWriter
from shared.events import Event
from shared.settings import Settings

NOW = datetime.now(UTC).replace(microsecond=0)


def _log(settings: Settings) -> None:
    """ "hot" was touched by 4 shoppers this week, "old" by 6 shoppers a month ago (their
    weight has halved four times: 0.375), "cold" by one three days ago (0.74); the catalogue
    adds "shelf" (no event)."""
    events = [
        *(Event(f"h{i}", f"u{i}", "hot", "view", None, NOW - timedelta(days=1)) for i in range(4)),
        *(Event(f"o{i}", f"v{i}", "old", "view", None, NOW - timedelta(days=28)) for i in range(6)),
        Event("c0", "w0", "cold", "purchase", None, NOW - timedelta(days=3)),
    ]
    with psycopg.connect(settings.require_database_url()) as conn:
        EventWriter().write(conn, events)
        conn.execute(
            "INSERT INTO items (item_id, category, available) VALUES "
            "('hot', 'a', true), ('old', 'a', true), ('cold', 'b', true), ('shelf', 'a', true)"
        )
        conn.commit()


def test_recommendations_similar_and_popular_answer_200_before_any_version(
    redis_settings: Settings, auth_headers: dict[str, str]
) -> None:
    _log(redis_settings)
    with TestClient(create_app(redis_settings), headers=auth_headers) as client:
        popular = client.get("/v1/items/popular", params={"n": 3})
        assert popular.status_code == 200
        assert popular.json()["source"] == "popular"
        assert [i["item_id"] for i in popular.json()["items"]] == ["hot", "cold", "old"]
        mine = client.get("/v1/users/u1/recommendations", params={"n": 3})
        assert mine.status_code == 200
        assert mine.json()["source"] == "popular"
        assert mine.json()["model_version"] == "fallback-popular"
        assert mine.json()["items"][0]["item_id"] == "hot"
        similar = client.get("/v1/items/hot/similar", params={"n": 5})
        assert similar.status_code == 200
        body = similar.json()
        assert body["source"] == "popular"
        # the popular items of the same category ("a"), the item itself left out
        assert [i["item_id"] for i in body["items"]] == ["old", "shelf"]
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready"
        assert ready["checks"]["model"] == "none promoted yet"


def test_an_empty_shop_answers_empty_lists_not_503(
    redis_settings: Settings, auth_headers: dict[str, str]
) -> None:
    with TestClient(create_app(redis_settings), headers=auth_headers) as client:
        answer = client.get("/v1/users/u1/recommendations")
        assert answer.status_code == 200
        assert answer.json()["items"] == []
        assert answer.json()["source"] == "popular"
