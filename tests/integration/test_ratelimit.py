"""Per key and scope rate limits on the real Redis: 429 + Retry-After, shared by processes,
fail open (recommend, events) or refuse (admin, analyst) when Redis is away."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from online.main import create_app
from online.ratelimit import CircuitBreaker, KeyRateLimiter
from shared.settings import Settings
from tests.probes import add_probe_routes
from tests.servers import running_api

pytestmark = pytest.mark.timeout(90)
EVENT = {"user_id": "u1", "item_id": "i1", "type": "view"}
TINY = {"rate_limit_events": "3/minute", "rate_limit_admin": "2/minute"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def limiter(app: FastAPI) -> KeyRateLimiter:
    found: KeyRateLimiter = app.state.rate_limiter
    return found


def post_event(client: TestClient | httpx.Client, key: str) -> Any:
    return client.post("/v1/events", json=[EVENT], headers=bearer(key))


@pytest.fixture
def tiny_settings(redis_settings: Settings) -> Settings:
    return redis_settings.model_copy(update=TINY)


@pytest.fixture
def closed_port() -> str:
    """A Redis URL nobody listens on: the port was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never answers (a hung Redis)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


# --- counting ------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
def test_over_the_limit_is_429_with_retry_after(
    tiny_settings: Settings, api_key: str, strategy: str
) -> None:
    app = create_app(tiny_settings.model_copy(update={"rate_limit_strategy": strategy}))
    with TestClient(app) as client:
        assert [post_event(client, api_key).status_code for _ in range(3)] == [200] * 3
        refused = post_event(client, api_key)
    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert refused.json() == {
        "error": "rate_limited",
        "detail": f"3 per 1 minute for scope 'events' used up; retry in {retry_after} s",
        "retry_after": retry_after,
    }
    assert limiter(app).counters.snapshot()["ratelimit_rejected_total"] == {"events": 1}


def test_each_key_and_each_scope_has_its_own_budget(
    tiny_settings: Settings, make_key: Callable[..., str]
) -> None:
    first, second = make_key(), make_key()
    with TestClient(create_app(tiny_settings)) as client:
        assert [post_event(client, first).status_code for _ in range(4)] == [200] * 3 + [429]
        assert post_event(client, second).status_code == 200
        admin = [client.get("/v1/admin/runs", headers=bearer(first)) for _ in range(3)]
        assert [r.status_code for r in admin] == [200, 200, 429]


def test_the_window_frees_requests_again(redis_settings: Settings, api_key: str) -> None:
    per_second = redis_settings.model_copy(update={"rate_limit_events": "1/second"})
    with TestClient(create_app(per_second)) as client:
        assert post_event(client, api_key).status_code == 200
        refused = post_event(client, api_key)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        time.sleep(1.1)
        assert post_event(client, api_key).status_code == 200


def test_two_apps_on_one_redis_prefix_share_the_limit(
    tiny_settings: Settings, api_key: str
) -> None:
    with (
        TestClient(create_app(tiny_settings)) as first,
        TestClient(create_app(tiny_settings)) as second,
    ):
        assert post_event(first, api_key).status_code == 200
        assert post_event(second, api_key).status_code == 200
        assert post_event(first, api_key).status_code == 200
        assert post_event(second, api_key).status_code == 429


def test_another_prefix_counts_apart(tiny_settings: Settings, api_key: str) -> None:
    other = tiny_settings.model_copy(
        update={"redis_key_prefix": f"{tiny_settings.redis_key_prefix}other:"}
    )
    with (
        TestClient(create_app(tiny_settings)) as first,
        TestClient(create_app(other)) as second,
    ):
        assert [post_event(first, api_key).status_code for _ in range(4)][-1] == 429
        assert post_event(second, api_key).status_code == 200


@pytest.mark.e2e
def test_two_server_workers_share_one_limit(
    tiny_settings: Settings, clean_database: str, api_key: str
) -> None:
    env = {
        "RECSYS_REDIS_URL": tiny_settings.require_redis_url(),
        "RECSYS_REDIS_KEY_PREFIX": tiny_settings.redis_key_prefix,
        "RECSYS_RATE_LIMIT_EVENTS": "10/minute",
    }

    def post(base: str) -> int:
        # A new connection each time, so the kernel spreads them over both workers.
        with httpx.Client(base_url=base, timeout=10) as client:
            return int(post_event(client, api_key).status_code)

    with (
        running_api(clean_database, workers=2, extra_env=env) as base,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        statuses = Counter(pool.map(post, [base] * 40))
    # Counted per process, two workers would have let up to 20 through.
    assert statuses == Counter({200: 10, 429: 30})


# --- Redis away ----------------------------------------------------------------------------


def test_redis_down_fails_open_for_events_and_recommend_and_refuses_admin_and_analyst(
    tiny_settings: Settings, api_key: str, closed_port: str
) -> None:
    down = tiny_settings.model_copy(update={"redis_url": closed_port})
    app = add_probe_routes(create_app(down))
    with TestClient(app, headers=bearer(api_key)) as client:
        assert [post_event(client, api_key).status_code for _ in range(5)] == [200] * 5
        assert client.get("/v1/probe/recommend").status_code == 200
        for path in ("/v1/admin/runs", "/v1/probe/analyst"):
            refused = client.get(path)
            assert refused.status_code == 503, path
            assert refused.json()["error"] == "rate_limiter_unavailable"
            assert int(refused.headers["Retry-After"]) >= 1
    counts = limiter(app).counters.snapshot()
    assert counts["ratelimit_fail_open_total"] == {"events": 5, "recommend": 1}
    assert counts["ratelimit_unavailable_total"] == {"admin": 1, "analyst": 1}
    assert counts["ratelimit_rejected_total"] == {}


def test_a_hung_redis_costs_one_timeout_then_the_breaker_skips_it(
    tiny_settings: Settings, api_key: str, silent_redis: str
) -> None:
    hung = tiny_settings.model_copy(
        update={
            "redis_url": silent_redis,
            "rate_limit_redis_timeout_seconds": 0.2,
            "rate_limit_breaker_seconds": 60,
        }
    )
    app = create_app(hung)
    with TestClient(app) as client:
        started = time.perf_counter()
        assert post_event(client, api_key).status_code == 200
        first = time.perf_counter() - started
        started = time.perf_counter()
        assert [post_event(client, api_key).status_code for _ in range(10)] == [200] * 10
        rest = time.perf_counter() - started
    assert 0.2 <= first < 2.0
    assert rest < 1.0  # no request waited on Redis again
    counts = limiter(app).counters.snapshot()
    assert counts["ratelimit_redis_errors_total"] == 1
    assert counts["ratelimit_fail_open_total"] == {"events": 11}


def test_without_a_redis_url_nothing_is_counted_and_admin_is_refused(
    settings: Settings, api_key: str
) -> None:
    app = create_app(settings)
    with TestClient(app, headers=bearer(api_key)) as client:
        assert post_event(client, api_key).status_code == 200
        assert client.get("/v1/admin/runs").status_code == 503
    counts = limiter(app).counters.snapshot()
    assert counts["ratelimit_fail_open_total"] == {"events": 1}
    assert counts["ratelimit_redis_errors_total"] == 0


def test_the_breaker_opens_then_lets_one_probe_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker(2.0, clock=lambda: now[0])
    assert [breaker.allows(), breaker.allows()] == [True, True]  # closed: all ask Redis
    breaker.record(ok=False)
    assert not breaker.allows()
    now[0] = 2.0
    assert breaker.allows()  # the probe...
    assert not breaker.allows()  # ...alone
    breaker.record(ok=False)
    now[0] = 3.0
    assert not breaker.allows()
    now[0] = 4.0
    assert breaker.allows()
    breaker.record(ok=True)
    assert [breaker.allows(), breaker.allows()] == [True, True]
