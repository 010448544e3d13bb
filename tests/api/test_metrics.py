"""GET /metrics and the serving usage, through the app on real PostgreSQL and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from online.instrumentation import Answer, FallbackKind, RequestTally, note_answer
from online.main import create_app
from online.metering import ServingMeter
from online.prometheus import Metrics
from shared.ranking.recommender import RankedList
from shared.settings import Settings
from shared.usage import UsageRecorder
from shared.usage_flush import Flusher
from tests.api.test_recommendations_api import a_known_user, train, wait_for_version
from tests.shop import SMALL_SHOP, load_shop

USER_ROUTE = "/v1/users/{user_id}/recommendations"
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens: every Redis call fails at once
FAMILIES = (
    "recsys_http_requests",
    "recsys_http_request_duration_seconds",
    "recsys_model_info",
    "recsys_model_age_seconds",
    "recsys_model_swaps",
    "recsys_model_refused",
    "recsys_recommendation_fallbacks",
    "recsys_ratelimit_fail_open",
    "recsys_ratelimit_rejected",
    "recsys_ratelimit_unavailable",
    "recsys_ratelimit_redis_errors",
    "recsys_realtime_failures",
    "recsys_budget_exceeded",
    "recsys_usage_pending_rows",
    "recsys_usage_dropped_requests",
)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    """Every sample of /metrics by (name, labels)."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def families(client: TestClient) -> set[str]:
    return {family.name for family in text_string_to_metric_families(client.get("/metrics").text)}


def usage(database_url: str) -> dict[str, tuple[int, int, int]]:
    """Route -> (requests, errors, items) over every inference_usage row."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT route, sum(requests), sum(errors), sum(items) FROM inference_usage GROUP BY 1"
        ).fetchall()
    return {route: (int(r), int(e), int(i)) for route, r, e, i in rows}


@pytest.fixture
def shop(redis_settings: Settings) -> Settings:
    """A shop with events and one promoted model (no catalogue: every item is available)."""
    load_shop(redis_settings.require_database_url(), SMALL_SHOP)
    train(redis_settings)
    return redis_settings.model_copy(update={"model_poll_seconds": 0.2})


@pytest.fixture
def client(shop: Settings, auth_headers: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(shop), headers=auth_headers) as test_client:
        with psycopg.connect(shop.require_database_url()) as conn:
            row = conn.execute("SELECT version FROM model_pointer").fetchone()
        assert row is not None
        wait_for_version(test_client, row[0])
        yield test_client


def test_metrics_list_every_family_by_route_template(client: TestClient, shop: Settings) -> None:
    user = a_known_user(shop)
    for who in (user, "someone-new", "someone-else"):
        assert client.get(f"/v1/users/{who}/recommendations", params={"n": 5}).status_code == 200
    assert client.get("/v1/items/no-such-item/similar").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    client.get("/healthz")
    samples = scrape(client)
    assert set(FAMILIES) <= families(client)
    requests = "recsys_http_requests_total"
    assert value(samples, requests, route=USER_ROUTE, method="GET", status="200") == 3
    assert (
        value(samples, requests, route="/v1/items/{item_id}/similar", method="GET", status="404")
        == 1
    )
    assert value(samples, requests, route="unmatched", method="GET", status="404") == 1
    assert value(samples, requests, route="/healthz", method="GET", status="200") == 1
    routes = {dict(labels).get("route") for _, labels in samples}
    assert not {route for route in routes if route and ("someone" in route or user in route)}
    histogram = "recsys_http_request_duration_seconds_count"
    assert value(samples, histogram, route=USER_ROUTE, method="GET") == 3
    assert value(samples, "recsys_http_request_duration_seconds_bucket",
                 route=USER_ROUTE, method="GET", le="+Inf") == 3  # fmt: skip
    version = client.app.state.live_model.version  # type: ignore[attr-defined]
    assert value(samples, "recsys_model_info", version=version) == 1
    assert value(samples, "recsys_model_swaps_total") == 1
    assert 0 < value(samples, "recsys_model_age_seconds") < 3600
    assert value(samples, "recsys_budget_exceeded", path="inference") == 0


def test_fallbacks_are_counted_by_reason(shop: Settings, auth_headers: dict[str, str]) -> None:
    offline_redis = shop.model_copy(update={"redis_url": DEAD_REDIS})
    with TestClient(create_app(offline_redis), headers=auth_headers) as client:
        with psycopg.connect(shop.require_database_url()) as conn:
            row = conn.execute("SELECT version FROM model_pointer").fetchone()
        assert row is not None
        wait_for_version(client, row[0])
        user = a_known_user(shop)
        cold = client.get("/v1/users/nobody-at-all/recommendations").json()
        filled = client.get(f"/v1/users/{user}/recommendations", params={"n": 100}).json()
        batch = client.post("/v1/recommendations", json={"user_ids": ["x1", "x2", user]})
        samples = scrape(client)
    assert cold["source"] == "popular"
    lists = [cold, filled, *batch.json()["results"]]
    fills = sum(1 for a in lists if a["source"] != "popular" and a["filled_from_popular"])
    fallbacks = "recsys_recommendation_fallbacks_total"
    assert value(samples, fallbacks, reason="cold_start") == 3  # one list, then two in a batch
    assert value(samples, fallbacks, reason="popular_fill") == fills
    assert value(samples, fallbacks, reason="realtime_unavailable") == 3  # one read a call
    assert value(samples, fallbacks, reason="no_model") == 0
    assert value(samples, "recsys_ratelimit_fail_open_total", scope="recommend") == 3
    assert value(samples, "recsys_ratelimit_redis_errors_total") >= 1
    with psycopg.connect(shop.require_database_url()) as conn:
        written = conn.execute(
            "SELECT model_version, sum(requests), sum(items) FROM inference_usage "
            "WHERE route = %s GROUP BY 1",
            (USER_ROUTE,),
        ).fetchall()
    assert written == [(row[0], 2, len(cold["items"]) + len(filled["items"]))]


def test_before_any_version_answers_come_from_the_fallback_and_its_usage_says_so(
    redis_settings: Settings, auth_headers: dict[str, str]
) -> None:
    with TestClient(create_app(redis_settings), headers=auth_headers) as client:
        assert client.get("/v1/users/u1/recommendations").status_code == 200
        assert client.get("/v1/items/popular").status_code == 200
        samples = scrape(client)
    assert value(samples, "recsys_recommendation_fallbacks_total", reason="no_model") == 0
    with psycopg.connect(redis_settings.require_database_url()) as conn:
        rows = conn.execute(
            "SELECT model_version, requests, errors FROM inference_usage WHERE route = %s",
            (USER_ROUTE,),
        ).fetchall()
    assert rows == [("fallback-popular", 1, 0)]


def test_usage_is_written_at_shutdown_by_route_template(
    redis_settings: Settings, auth_headers: dict[str, str]
) -> None:
    with TestClient(create_app(redis_settings), headers=auth_headers) as client:
        for n in range(25):
            client.get("/healthz")
            client.post("/v1/events", json=[{"user_id": f"u{n}", "item_id": "i", "type": "view"}])
        client.get("/no/such/path")
        client.get("/openapi.json")  # a plain Starlette route: no scope["route"], an endpoint
    written = usage(redis_settings.require_database_url())
    assert written["/healthz"] == (25, 0, 0)
    assert written["/v1/events"] == (25, 0, 0)
    assert written["unmatched"] == (1, 0, 0)
    assert written["/openapi.json"] == (1, 0, 0)


def test_metering_off_leaves_no_usage_and_no_request_metrics(
    redis_settings: Settings, auth_headers: dict[str, str]
) -> None:
    off = redis_settings.model_copy(update={"metering": False})
    with TestClient(create_app(off), headers=auth_headers) as client:
        for _ in range(10):
            client.get("/healthz")
        client.get("/v1/users/u1/recommendations")
        samples = scrape(client)
    assert not [name for name, _ in samples if name.startswith("recsys_http_")]
    assert value(samples, "recsys_recommendation_fallbacks_total", reason="no_model") == 0
    assert usage(redis_settings.require_database_url()) == {}


def test_the_flushers_budget_check_sets_the_gauge(settings: Settings) -> None:
    """Today's serving cost over a tiny daily budget: the next check sets the gauge to 1."""
    tight = settings.model_copy(update={"daily_budget_inference": 1e-12})
    recorder = UsageRecorder()
    recorder.record("/healthz", None, 200, 0.001)
    time.sleep(0.05)  # 0.05 allocated vCPU-seconds: far over the budget at any price
    with psycopg.connect(tight.require_database_url()) as conn:
        assert recorder.flush(conn, final=True) == 1
    meter = ServingMeter(tight)
    flusher = Flusher(
        recorder,
        lambda: psycopg.connect(tight.require_database_url()),
        interval=0.05,
        settings=tight,
        on_budgets=meter.budgets_checked,
    ).start()
    try:
        gauge = meter.metrics.budget_exceeded
        deadline = time.monotonic() + 10
        while gauge.labels("inference")._value.get() != 1:
            assert time.monotonic() < deadline, "the budget gauge was not set"
            time.sleep(0.05)
        assert gauge.labels("training")._value.get() == 0
    finally:
        flusher.stop()


@pytest.mark.parametrize(
    ("fallbacks", "expected"),
    [("user", (7, 1, 1)), ("item", (7, 0, 2)), (None, (7, 0, 0))],
)
def test_which_popular_answers_count_as_fallbacks(
    fallbacks: FallbackKind | None, expected: tuple[int, int, int]
) -> None:
    lists = [
        RankedList(["a", "b"], [2.0, 1.0], "model"),
        RankedList(["c", "d"], [1.0, 0.5], "realtime", filled_from_popular=1),
        RankedList(["e", "f", "g"], [9.0, 8.0, 7.0], "popular", filled_from_popular=3),
    ]
    request = Request({"type": "http", "state": {}})
    note_answer(request, "v1", lists, fallbacks=fallbacks)
    answer: Answer = request.state.recsys_answer
    assert (answer.items, answer.cold_start, answer.popular_fill) == expected
    assert answer.model_version == "v1"


def test_a_tally_published_at_once_equals_observing_each_request() -> None:
    """Metrics.observe_many (bulk, private prometheus_client parts) against observe()."""
    latencies = [0.0001, 0.0005, 0.0007, 0.003, 0.0031, 0.2, 9.9, 11.0, 40.0]
    bulk, one_by_one = Metrics(), Metrics()
    tally = RequestTally()
    for seconds in latencies:
        tally.add("/r", "GET", 200, seconds, None)
        one_by_one.latency.labels("/r", "GET").observe(seconds)
    bulk.observe_many("/r", "GET", tally.cells["/r", "GET", 200, None])

    def histogram(metrics: Metrics) -> dict[tuple[str, str], float]:
        [family] = [f for f in metrics.registry.collect() if f.name == metrics.latency._name]
        return {
            (s.name, s.labels.get("le", "")): s.value
            for s in family.samples
            if not s.name.endswith("_created")
        }

    expected = histogram(one_by_one)
    assert expected[("recsys_http_request_duration_seconds_count", "")] == len(latencies)
    assert histogram(bulk) == pytest.approx(expected)
