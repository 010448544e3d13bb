"""The recommendation routes on a real trained model, real PostgreSQL and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from offline.runs import execute_run
from online.main import create_app
from shared import registry
from shared.control.retrain import request_retrain
from shared.settings import Settings
from tests.shop import SMALL_SHOP, load_shop, stock_catalogue

FAST_MODEL = {"factors": 16, "iterations": 6, "final_fit": False}


def train(settings: Settings, **overrides: Any) -> str:
    tuned = settings.model_copy(update={**FAST_MODEL, **overrides})
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        answer = request_retrain(conn, tuned, trigger="test", force=True)
    outcome = execute_run(tuned, answer.run_id)
    assert outcome.version is not None
    return outcome.version


def wait_for_version(client: TestClient, version: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while client.app.state.live_model.version != version:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"{version} not served within {timeout} s"
        time.sleep(0.05)


@pytest.fixture
def served(redis_settings: Settings) -> Settings:
    """A shop with a catalogue and one promoted model."""
    load_shop(redis_settings.require_database_url(), SMALL_SHOP)
    stock_catalogue(redis_settings.require_database_url())
    train(redis_settings)
    return redis_settings.model_copy(update={"model_poll_seconds": 0.2})


@pytest.fixture
def client(served: Settings, auth_headers: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(served), headers=auth_headers) as test_client:
        with psycopg.connect(served.require_database_url()) as conn:
            live = registry.pointer(conn)
        assert live is not None
        wait_for_version(test_client, live[0])
        yield test_client


def catalogue(settings: Settings) -> dict[str, tuple[str, bool]]:
    with psycopg.connect(settings.require_database_url()) as conn:
        rows = conn.execute("SELECT item_id, category, available FROM items").fetchall()
    return {item: (category, available) for item, category, available in rows}


def seen_by(settings: Settings, user: str) -> set[str]:
    with psycopg.connect(settings.require_database_url()) as conn:
        rows = conn.execute("SELECT DISTINCT item_id FROM events WHERE user_id = %s", (user,))
        return {row[0] for row in rows}


def a_known_user(settings: Settings) -> str:
    with psycopg.connect(settings.require_database_url()) as conn:
        row = conn.execute(
            "SELECT user_id FROM events GROUP BY user_id ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    return str(row[0])


def ids(answer: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


def test_a_known_user_gets_n_unseen_available_items_from_the_model(
    client: TestClient, served: Settings
) -> None:
    user = a_known_user(served)
    answer = client.get(f"/v1/users/{user}/recommendations", params={"n": 20}).json()
    assert answer["source"] == "model"
    assert answer["user_id"] == user
    assert answer["model_version"] == client.app.state.live_model.version  # type: ignore[attr-defined]
    items = ids(answer)
    assert len(items) == 20
    assert len(set(items)) == 20
    assert not set(items) & seen_by(served, user)
    shop = catalogue(served)
    assert all(shop[item][1] for item in items if item in shop)


def test_include_seen_allows_seen_items(client: TestClient, served: Settings) -> None:
    user = a_known_user(served)
    answer = client.get(
        f"/v1/users/{user}/recommendations", params={"n": 100, "include_seen": "true"}
    ).json()
    assert set(ids(answer)) & seen_by(served, user)


def test_exclude_and_category_filters(client: TestClient, served: Settings) -> None:
    user = a_known_user(served)
    first = ids(client.get(f"/v1/users/{user}/recommendations", params={"n": 5}).json())
    again = client.get(
        f"/v1/users/{user}/recommendations",
        params={"n": 5, "exclude": first[:3], "category": "cat-1"},
    ).json()
    shop = catalogue(served)
    assert len(ids(again)) == 5
    assert not set(ids(again)) & set(first[:3])
    assert all(shop[item] == ("cat-1", True) for item in ids(again))


def test_n_is_met_by_filling_from_popular(client: TestClient) -> None:
    answer = client.get("/v1/users/u-000001/recommendations", params={"n": 100}).json()
    assert len(ids(answer)) == 100
    assert len(set(ids(answer))) == 100


def test_an_unknown_user_gets_popular_items(client: TestClient) -> None:
    answer = client.get("/v1/users/nobody-at-all/recommendations", params={"n": 7}).json()
    assert answer["source"] == "popular"
    assert len(ids(answer)) == 7
    popular = client.get("/v1/items/popular", params={"n": 7}).json()
    assert ids(popular) == ids(answer)


def test_a_new_users_events_change_their_list_at_once(client: TestClient, served: Settings) -> None:
    user = "brand-new-shopper"
    seed_user = a_known_user(served)
    liked = sorted(seen_by(served, seed_user))[:5]
    before = client.get(f"/v1/users/{user}/recommendations", params={"n": 10}).json()
    assert before["source"] == "popular"
    posted = client.post(
        "/v1/events",
        json=[{"user_id": user, "item_id": item, "type": "purchase"} for item in liked],
    )
    assert posted.json()["accepted"] == 5
    started = time.monotonic()
    after = client.get(f"/v1/users/{user}/recommendations", params={"n": 10}).json()
    assert time.monotonic() - started < 1.0
    assert after["source"] == "realtime"
    assert ids(after) != ids(before)
    assert not set(ids(after)) & set(liked)


def test_a_known_users_new_event_is_excluded_and_folded_in(
    client: TestClient, served: Settings
) -> None:
    user = a_known_user(served)
    top = ids(client.get(f"/v1/users/{user}/recommendations", params={"n": 3}).json())
    client.post("/v1/events", json=[{"user_id": user, "item_id": top[0], "type": "purchase"}])
    after = client.get(f"/v1/users/{user}/recommendations", params={"n": 3}).json()
    assert after["source"] == "realtime"
    assert top[0] not in ids(after)


def test_similar_items(client: TestClient, served: Settings) -> None:
    item = sorted(seen_by(served, a_known_user(served)))[0]
    answer = client.get(f"/v1/items/{item}/similar", params={"n": 5}).json()
    assert len(ids(answer)) == 5
    assert item not in ids(answer)
    assert answer["item_id"] == item
    missing = client.get("/v1/items/no-such-item/similar")
    assert missing.status_code == 404
    assert missing.json()["error"] == "unknown_item"


def test_batch_recommendations_match_single_ones(client: TestClient, served: Settings) -> None:
    users = [a_known_user(served), "nobody-at-all"]
    batch = client.post("/v1/recommendations", json={"user_ids": users, "n": 4}).json()
    for user, result in zip(users, batch["results"], strict=True):
        single = client.get(f"/v1/users/{user}/recommendations", params={"n": 4}).json()
        assert result["user_id"] == user
        assert ids(result) == ids(single)
        assert result["source"] == single["source"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/users/u/recommendations", {"n": 0}),
        ("/v1/users/u/recommendations", {"n": 101}),
        ("/v1/users/u/recommendations", {"n": "ten"}),
        ("/v1/users/" + "x" * 257 + "/recommendations", {}),
        ("/v1/items/" + "x" * 257 + "/similar", {}),
        ("/v1/items/popular", {"category": "c" * 257}),
    ],
)
def test_bad_input_is_422(client: TestClient, path: str, params: dict[str, Any]) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_batch_of_more_than_100_users_is_422(client: TestClient) -> None:
    response = client.post("/v1/recommendations", json={"user_ids": [f"u{i}" for i in range(101)]})
    assert response.status_code == 422


def test_the_model_route_describes_the_live_version(client: TestClient) -> None:
    answer = client.get("/v1/model").json()
    assert answer["model_version"] == client.app.state.live_model.version  # type: ignore[attr-defined]
    assert answer["metrics"]["candidate"]["ndcg"] > 0
    assert answer["age_seconds"] >= 0


def test_a_promotion_is_served_within_seconds(client: TestClient, served: Settings) -> None:
    newer = train(served.model_copy(update={"gate_tolerance": 0.99}), factors=12)
    started = time.monotonic()
    wait_for_version(client, newer, timeout=5)
    assert time.monotonic() - started < 5
    answer = client.get("/v1/items/popular").json()
    assert answer["model_version"] == newer


def test_a_corrupt_artifact_is_refused_and_the_old_version_keeps_serving(
    client: TestClient, served: Settings
) -> None:
    live = client.app.state.live_model  # type: ignore[attr-defined]
    serving = live.version
    broken = train(served.model_copy(update={"gate_tolerance": 0.99}), factors=8)
    with psycopg.connect(served.require_database_url(), autocommit=True) as conn:
        version = registry.get_version(conn, broken)
        assert version is not None
        registry.rollback(conn, moved_by="test")  # serve the old one while we break the new
        wait_for_version(client, serving)
        factors = Path(version.artifact_path) / "item_factors.npy"
        factors.write_bytes(factors.read_bytes()[:-16] + b"\0" * 16)
        registry.promote_version(conn, broken, moved_by="test")
    deadline = time.monotonic() + 5
    while live.refused[broken] == 0:
        assert time.monotonic() < deadline, "the corrupt version was never refused"
        time.sleep(0.05)
    assert live.version == serving
    assert client.get("/v1/items/popular").json()["model_version"] == serving
    ready = client.get("/readyz")
    assert ready.status_code == 200  # still serving; the refusal is reported, not fatal
    assert f"promoted {broken} was refused" in ready.json()["checks"]["model"]


def test_no_model_yet_serves_popular_and_is_ready_for_ingestion(
    redis_settings: Settings, auth_headers: dict[str, str]
) -> None:
    with TestClient(create_app(redis_settings), headers=auth_headers) as client:
        response = client.get("/v1/users/u/recommendations")
        assert response.status_code == 200
        assert response.json()["source"] == "popular"
        assert client.get("/readyz").json()["checks"]["model"] == "none promoted yet"
