"""API keys on every /v1 route: 401 without a usable key, 403 without the scope, probes open."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from online.auth import KeyCache
from online.main import create_app
from shared.keys import SCOPES, ApiKey, create_key, generate_key, revoke_key
from shared.settings import Settings
from tests.probes import add_probe_routes

pytestmark = pytest.mark.timeout(60)
EVENT = {"user_id": "u1", "item_id": "i1", "type": "view"}
# One cheap call per route group, and the scope each group needs.
ROUTES: dict[str, tuple[str, str, Any]] = {
    "events": ("POST", "/v1/events", [EVENT]),
    "items": ("PUT", "/v1/items", [{"item_id": "sku-1"}]),
    "admin": ("GET", "/v1/admin/runs", None),
    "recommend": ("GET", "/v1/probe/recommend", None),
    "analyst": ("GET", "/v1/probe/analyst", None),
}
NEEDS = {"events": "events", "items": "events", "admin": "admin"} | {
    s: s for s in ("recommend", "analyst")
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def call(client: TestClient, route: str, headers: dict[str, str] | None = None) -> Any:
    method, path, body = ROUTES[route]
    return client.request(method, path, json=body, headers=headers)


@pytest.fixture
def client(redis_settings: Settings) -> Iterator[TestClient]:
    with TestClient(add_probe_routes(create_app(redis_settings))) as test_client:
        yield test_client


@pytest.mark.parametrize("route", ROUTES)
def test_no_key_is_401_with_a_bearer_challenge(client: TestClient, route: str) -> None:
    response = call(client, route)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="recsys"'
    assert response.json() == {
        "error": "unauthorized",
        "detail": "send an API key: 'Authorization: Bearer <key>'",
    }


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer not-a-key", "Token {key}", "{key}"],
)
def test_a_malformed_header_is_401(client: TestClient, api_key: str, header: str) -> None:
    response = call(client, "events", {"Authorization": header.format(key=api_key)})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.json()["error"] == "unauthorized"
    assert "malformed" in response.json()["detail"]


def test_an_unknown_key_is_401(client: TestClient) -> None:
    response = call(client, "events", bearer(generate_key()))
    assert response.status_code == 401
    assert response.json()["detail"] == "unknown API key"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_the_scheme_is_case_insensitive(client: TestClient, api_key: str) -> None:
    assert call(client, "events", {"Authorization": f"bearer {api_key}"}).status_code == 200


@pytest.mark.parametrize("scope", SCOPES)
def test_each_scope_opens_its_routes_and_only_those(
    client: TestClient, make_key: Callable[..., str], scope: str
) -> None:
    key = make_key(scope)
    for route, needed in NEEDS.items():
        response = call(client, route, bearer(key))
        if needed == scope:
            assert response.status_code == 200, (route, response.json())
        else:
            assert response.status_code == 403, route
            assert response.json()["error"] == "forbidden"
            assert response.json()["scope"] == needed
            challenge = response.headers["WWW-Authenticate"]
            assert f'error="insufficient_scope", scope="{needed}"' in challenge


def test_a_key_with_several_scopes_opens_all_of_them(
    client: TestClient, make_key: Callable[..., str]
) -> None:
    key = make_key("recommend,events")
    assert [call(client, route, bearer(key)).status_code for route in NEEDS] == [
        200,
        200,
        403,
        200,
        403,
    ]


def test_the_caller_is_on_request_state(
    client: TestClient, make_key: Callable[..., str], clean_database: str
) -> None:
    key = make_key("recommend,analyst", name="frontend")
    answer = call(client, "recommend", bearer(key)).json()
    assert answer["name"] == "frontend"
    assert answer["scopes"] == ["analyst", "recommend"]
    with psycopg.connect(clean_database) as conn:
        row = conn.execute(
            "SELECT key_id::text, last_used_at FROM api_keys WHERE name = 'frontend'"
        ).fetchone()
    assert row is not None
    assert row[0] == answer["key_id"]
    assert row[1] is not None  # noted on the first lookup (then at most hourly)


def test_a_revoked_key_is_refused_once_the_cache_expires(
    redis_settings: Settings, clean_database: str
) -> None:
    tiny = redis_settings.model_copy(update={"auth_cache_seconds": 0.2})
    with psycopg.connect(clean_database, autocommit=True) as conn:
        new = create_key(conn, name="leaked", scopes="events")
    with TestClient(create_app(tiny), headers=bearer(new.key)) as client:
        assert call(client, "events").status_code == 200
        with psycopg.connect(clean_database, autocommit=True) as conn:
            revoke_key(conn, str(new.record.key_id))
        time.sleep(0.3)
        response = call(client, "events")
        assert response.status_code == 401
        assert response.json()["detail"] == "this API key was revoked"


def test_without_a_cache_a_revocation_takes_effect_at_once(
    redis_settings: Settings, clean_database: str
) -> None:
    uncached = redis_settings.model_copy(update={"auth_cache_seconds": 0})
    with psycopg.connect(clean_database, autocommit=True) as conn:
        new = create_key(conn, name="leaked", scopes="admin")
    with TestClient(create_app(uncached), headers=bearer(new.key)) as client:
        assert call(client, "admin").status_code == 200
        with psycopg.connect(clean_database, autocommit=True) as conn:
            revoke_key(conn, new.record.prefix)
        assert call(client, "admin").status_code == 401


def test_a_new_key_works_at_once_and_a_cached_one_needs_no_database(
    redis_settings: Settings, make_key: Callable[..., str]
) -> None:
    app = add_probe_routes(create_app(redis_settings))
    with TestClient(app) as client:
        assert call(client, "recommend", bearer(generate_key())).status_code == 401
        key = make_key("recommend")  # created after a miss: misses are not cached
        assert call(client, "recommend", bearer(key)).status_code == 200
        app.state.pool.close()  # a cached key is answered without the database...
        assert call(client, "recommend", bearer(key)).status_code == 200
        # ...and one that must be looked up is a clear 503 while the database is away
        assert call(client, "recommend", bearer(make_key("recommend"))).status_code == 503


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json"])
def test_probes_and_docs_need_no_key(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_the_openapi_document_declares_the_bearer_scheme(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer rk_...`, from `recsys keys create`.",
    }
    assert spec["paths"]["/v1/events"]["post"]["security"] == [{"ApiKey": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_the_key_cache_trusts_an_answer_for_its_ttl_only() -> None:
    now = [100.0]
    cache = KeyCache(5.0, max_entries=2, clock=lambda: now[0])
    record = _record("a")
    cache.put(b"a", record)
    assert cache.get(b"a") is not None
    now[0] += 5.0
    assert cache.get(b"a") is None
    cache.put(b"a", record)
    cache.put(b"b", _record("b"))
    cache.put(b"c", _record("c"))  # full: the oldest goes
    assert [cache.get(k) is not None for k in (b"a", b"b", b"c")] == [False, True, True]


def test_a_zero_ttl_caches_nothing() -> None:
    cache = KeyCache(0.0)
    assert not cache.put(b"a", _record("a")).revoked
    assert cache.get(b"a") is None


def _record(name: str) -> ApiKey:
    return ApiKey(uuid.uuid4(), name, "rk_abcdef", ["events"], datetime.now(UTC), None, None)
