"""The real `recsys serve` (uvicorn, 2 worker processes) over real HTTP."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from shared.event_store import count_events
from shared.settings import Settings
from tests.servers import running_api

pytestmark = pytest.mark.e2e


def test_events_posted_over_http_to_two_workers_are_stored_once(
    clean_database: str, redis_settings: Settings, auth_headers: dict[str, str]
) -> None:
    events = [
        {"event_id": f"e{n}", "user_id": f"u{n % 5}", "item_id": f"i{n}", "type": "click"}
        for n in range(500)
    ]
    env = {
        "RECSYS_REDIS_URL": redis_settings.require_redis_url(),
        "RECSYS_REDIS_KEY_PREFIX": redis_settings.redis_key_prefix,
    }
    with (
        running_api(clean_database, workers=2, extra_env=env) as base,
        httpx.Client(base_url=base, headers=auth_headers) as client,
    ):
        assert client.get("/readyz").json()["status"] == "ready"
        answers = [
            client.post("/v1/events", json=events[n : n + 100]).json() for n in range(0, 500, 100)
        ]
        resent = client.post("/v1/events", json=events[:250]).json()
    assert sum(a["accepted"] for a in answers) == 500
    assert resent == {"accepted": 0, "duplicates": 250, "rejected": []}
    with psycopg.connect(clean_database) as conn:
        assert count_events(conn) == 500
