"""Each serving strategy, chosen by RECSYS_SERVING_STRATEGY, through a real retrain and the API."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from online.main import create_app
from shared import registry
from shared.artifacts import read_version
from shared.ranking.recommender import Recommender
from shared.settings import Settings
from tests.api.test_recommendations_api import (
    a_known_user,
    catalogue,
    seen_by,
    train,
    wait_for_version,
)
from tests.shop import SMALL_SHOP, load_shop, stock_catalogue


@pytest.fixture
def shop(redis_settings: Settings) -> Settings:
    """The small shop with a catalogue (a tenth of the items unavailable), no model yet."""
    load_shop(redis_settings.require_database_url(), SMALL_SHOP)
    stock_catalogue(redis_settings.require_database_url())
    return redis_settings.model_copy(update={"model_poll_seconds": 0.2})


@pytest.mark.parametrize("strategy", ["precomputed", "batched", "ann", "float16"])
def test_a_version_trained_for_a_strategy_is_served_by_it(
    shop: Settings, auth_headers: dict[str, str], strategy: str
) -> None:
    version = train(shop, serving_strategy=strategy)
    with psycopg.connect(shop.require_database_url()) as conn:
        row = registry.get_version(conn, version)
    assert row is not None
    assert row.status == "promoted"
    assert read_version(Path(row.artifact_path)).manifest.serving["name"] == strategy
    items = catalogue(shop)
    user = a_known_user(shop)
    with TestClient(create_app(shop), headers=auth_headers) as client:
        wait_for_version(client, version)
        live: Recommender = client.app.state.live_model.current  # type: ignore[attr-defined]
        assert live.serving.name == strategy
        for params in ({"n": 20}, {"n": 10, "category": "cat-1"}):
            answer = client.get(f"/v1/users/{user}/recommendations", params=params).json()
            ids = [entry["item_id"] for entry in answer["items"]]
            assert len(ids) == len(set(ids)) == params["n"]
            assert not set(ids) & seen_by(shop, user)
            assert all(items[item][1] for item in ids)  # available
            if "category" in params:
                assert {items[item][0] for item in ids} == {"cat-1"}
        if strategy == "batched":
            assert client.app.state.request_batcher.scans >= 2  # type: ignore[attr-defined]
