"""/v1/admin through the ASGI app, on a real PostgreSQL and Redis (no worker: runs go inline)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from offline.runs import execute_run
from online.main import create_app
from online.ratelimit import KeyRateLimiter
from shared import registry
from shared.control.names import RETRAIN, TRAINING_QUEUE
from shared.control.retrain import request_retrain
from shared.redis_url import redis_py_url
from shared.settings import Settings
from tests.shop import SMALL_SHOP, load_shop

pytestmark = pytest.mark.timeout(60)
# A small, quick model: these tests need versions to exist, not to be good.
QUICK_MODEL: dict[str, Any] = {"factors": 16, "iterations": 4, "final_fit": False}


@pytest.fixture
def admin_settings(redis_settings: Settings) -> Settings:
    """The test's settings on the real Redis, under a key prefix of this test's own."""
    return redis_settings


@pytest.fixture
def client(admin_settings: Settings, auth_headers: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(admin_settings), headers=auth_headers) as test_client:
        yield test_client


def app_with_live_limiter(settings: Settings, *, limiter_settings: Settings) -> FastAPI:
    """An app whose rate limiter counts on a live Redis whatever settings says about Redis.

    Redis can fail between the rate limit and the broker call; this reaches that path
    (a Redis that is down from the start is refused by the limiter: test_ratelimit.py).
    """
    app = create_app(settings)
    app.state.rate_limiter = KeyRateLimiter(limiter_settings)
    return app


def closed_port_url() -> str:
    """A Redis URL nobody listens on: the port was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def run_row(settings: Settings, run_id: str) -> registry.Run:
    with psycopg.connect(settings.require_database_url()) as conn:
        run = registry.get_run(conn, uuid.UUID(run_id))
    assert run is not None
    return run


def queued_messages(settings: Settings) -> list[dict[str, Any]]:
    """The Celery messages waiting in the training queue (kombu's Redis list, prefixed)."""
    assert settings.redis_url
    with redis.Redis.from_url(redis_py_url(settings.redis_url)) as client:
        raw = client.lrange(f"{settings.redis_key_prefix}{TRAINING_QUEUE}", 0, -1)
    return [orjson.loads(message) for message in raw]


def retrain_inline(settings: Settings) -> str:
    """Trigger and execute a run here, without a worker (under a second); its version."""
    quick = settings.model_copy(update=QUICK_MODEL)
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        trigger = request_retrain(conn, quick, trigger="test", force=True)
    outcome = execute_run(quick, trigger.run_id)
    assert outcome.version is not None, outcome
    return outcome.version


def live_pointer(settings: Settings) -> tuple[str, str | None] | None:
    with psycopg.connect(settings.require_database_url()) as conn:
        return registry.pointer(conn)


# --- retraining -----------------------------------------------------------------------------


def test_a_trigger_queues_one_run_and_a_second_answers_409_with_it(
    client: TestClient, admin_settings: Settings
) -> None:
    first = client.post("/v1/admin/retrain", json={"force": True})
    assert first.status_code == 202
    answer = first.json()
    assert answer["status"] == "queued"
    assert answer["created"] is True
    run = run_row(admin_settings, answer["run_id"])
    assert (run.status, run.trigger, run.forced) == ("queued", "api", True)
    messages = queued_messages(admin_settings)
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == RETRAIN
    assert messages[0]["headers"]["id"] == run.task_id

    second = client.post("/v1/admin/retrain")
    assert second.status_code == 409
    assert second.json() == {"run_id": answer["run_id"], "status": "queued", "created": False}
    assert len(queued_messages(admin_settings)) == 1


def test_a_dead_broker_is_503_and_fails_the_run_so_it_blocks_nothing(
    admin_settings: Settings, auth_headers: dict[str, str]
) -> None:
    down = admin_settings.model_copy(update={"redis_url": closed_port_url()})
    app = app_with_live_limiter(down, limiter_settings=admin_settings)
    with TestClient(app, headers=auth_headers) as dead:
        response = dead.post("/v1/admin/retrain", json={"force": False})
        assert response.status_code == 503
        assert response.json()["error"] == "broker_unavailable"
        assert dead.get("/v1/admin/schedule").status_code == 503
    with psycopg.connect(admin_settings.require_database_url()) as conn:
        runs = registry.list_runs(conn)
    assert [(r.status, r.trigger) for r in runs] == [("failed", "api")]
    assert (runs[0].error or "").startswith("not queued")
    with TestClient(create_app(admin_settings), headers=auth_headers) as alive:
        assert alive.post("/v1/admin/retrain").status_code == 202


def test_without_a_redis_url_a_trigger_is_503_and_queues_nothing(
    settings: Settings, admin_settings: Settings, auth_headers: dict[str, str]
) -> None:
    app = app_with_live_limiter(settings, limiter_settings=admin_settings)
    with TestClient(app, headers=auth_headers) as no_redis:
        response = no_redis.post("/v1/admin/retrain")
        assert response.status_code == 503
        assert "RECSYS_REDIS_URL" in response.json()["detail"]
        assert no_redis.get("/v1/admin/runs").json() == {"runs": []}


@pytest.mark.parametrize(
    "body", [{"force": "maybe"}, {"forse": True}, [True]], ids=["type", "unknown", "array"]
)
def test_a_bad_retrain_body_is_422(client: TestClient, body: Any) -> None:
    response = client.post("/v1/admin/retrain", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_runs_are_listed_newest_first_and_shown_one_by_one(
    client: TestClient, admin_settings: Settings
) -> None:
    with psycopg.connect(admin_settings.require_database_url(), autocommit=True) as conn:
        older = registry.create_run(conn, trigger="cli", forced=False, settings={})
        registry.finish_run(conn, older, status="skipped", reason="no new events")
    newer = client.post("/v1/admin/retrain").json()["run_id"]

    listed = client.get("/v1/admin/runs").json()["runs"]
    assert [r["run_id"] for r in listed] == [newer, str(older)]
    assert client.get("/v1/admin/runs", params={"limit": 1}).json()["runs"][0]["run_id"] == newer
    shown = client.get(f"/v1/admin/runs/{older}").json()
    assert (shown["status"], shown["trigger"]) == ("skipped", "cli")
    assert shown["reason"] == "no new events"


def test_run_lookups_answer_404_and_422(client: TestClient) -> None:
    missing = client.get(f"/v1/admin/runs/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert client.get("/v1/admin/runs/not-a-uuid").status_code == 422
    assert client.get("/v1/admin/runs", params={"limit": 0}).status_code == 422
    assert client.get("/v1/admin/runs", params={"limit": "x"}).status_code == 422


# --- model versions -------------------------------------------------------------------------


def test_models_list_show_promote_and_rollback_move_the_pointer(
    client: TestClient, admin_settings: Settings
) -> None:
    assert client.get("/v1/admin/models").json() == {"live": None, "previous": None, "versions": []}
    rollback = client.post("/v1/admin/models/rollback")
    assert rollback.status_code == 409
    assert rollback.json()["error"] == "conflict"

    load_shop(admin_settings.require_database_url(), SMALL_SHOP)
    first = retrain_inline(admin_settings)
    second = retrain_inline(admin_settings)
    listed = client.get("/v1/admin/models").json()
    assert [v["version"] for v in listed["versions"]] == [second, first]
    live = listed["live"]
    assert live in (first, second)
    assert [v["promoted"] for v in listed["versions"]] == [v == live for v in (second, first)]

    other = first if live == second else second
    promoted = client.post(f"/v1/admin/models/{other}/promote")
    assert promoted.status_code == 200
    assert promoted.json() == {"live": other, "previous": live}
    assert live_pointer(admin_settings) == (other, live)
    shown = client.get(f"/v1/admin/models/{other}").json()
    assert (shown["version"], shown["promoted"], shown["status"]) == (other, True, "promoted")

    rolled = client.post("/v1/admin/models/rollback")
    assert rolled.status_code == 200
    assert rolled.json()["live"] == live
    assert live_pointer(admin_settings) == (live, other)


def test_model_lookups_answer_404_and_pruned_files_409(
    client: TestClient, admin_settings: Settings
) -> None:
    assert client.get("/v1/admin/models/nope").status_code == 404
    unknown = client.post("/v1/admin/models/nope/promote")
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["detail"]
    assert client.get("/v1/admin/models", params={"limit": 5000}).status_code == 422

    load_shop(admin_settings.require_database_url(), SMALL_SHOP)
    version = retrain_inline(admin_settings)
    with psycopg.connect(admin_settings.require_database_url(), autocommit=True) as conn:
        conn.execute("TRUNCATE model_pointer")
        registry.mark_files_deleted(conn, [version])
    pruned = client.post(f"/v1/admin/models/{version}/promote")
    assert pruned.status_code == 409
    assert "pruned" in pruned.json()["detail"]
    assert live_pointer(admin_settings) is None


# --- the retrain schedule -------------------------------------------------------------------


def test_schedule_set_show_pause_resume(client: TestClient) -> None:
    assert client.get("/v1/admin/schedule").status_code == 404
    assert client.post("/v1/admin/schedule/pause").status_code == 404
    assert client.post("/v1/admin/schedule/resume").status_code == 404

    body = {"cron": "0 3 * * *", "timezone": "Europe/Berlin"}
    saved = client.put("/v1/admin/schedule", json=body)
    assert saved.status_code == 200
    info = saved.json()
    assert (info["cron"], info["timezone"], info["enabled"]) == ("0 3 * * *", "Europe/Berlin", True)
    assert info["next_run_at"] is not None
    assert client.get("/v1/admin/schedule").json()["cron"] == "0 3 * * *"

    paused = client.post("/v1/admin/schedule/pause").json()
    assert (paused["enabled"], paused["next_run_at"]) == (False, None)
    assert client.get("/v1/admin/schedule").json()["enabled"] is False
    assert client.post("/v1/admin/schedule/resume").json()["enabled"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"cron": "0 3 * *"},
        {"cron": "61 3 * * *"},
        {"cron": "0 3 * * *", "timezone": "Mars/Olympus"},
        {"timezone": "UTC"},
        {"cron": 3},
    ],
    ids=["four-fields", "bad-minute", "bad-zone", "no-cron", "not-a-string"],
)
def test_a_bad_schedule_is_422_and_changes_nothing(client: TestClient, body: Any) -> None:
    response = client.put("/v1/admin/schedule", json=body)
    assert response.status_code == 422
    assert response.json()["error"] in {"invalid_schedule", "invalid_request"}
    assert response.json()["detail"]
    assert client.get("/v1/admin/schedule").status_code == 404
