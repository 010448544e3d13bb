"""Fuzz every operation of the OpenAPI schema: bad input gets a clear JSON 4xx, never a 5xx.

Schemathesis reads /openapi.json from the real app (ASGI, in process) and generates requests
for each operation, both fitting the schema (positive) and breaking it (negative). Every
request carries a key with every scope, so the fuzzer gets past auth into the handlers; the
app runs on real PostgreSQL and Redis with a trained model loaded, so the recommendation
routes score with a model rather than answering 503.

Nothing is excluded. The routes that write are fuzzed too, on purpose: `/v1/events` and
`/v1/items` write into this module's own shop; `/v1/admin/retrain` queues a run on a broker
queue under this module's own Redis key prefix (no worker consumes it); the schedule routes
write a RedBeat entry under the same prefix; promote and rollback only move the pointer when
given a kept version, and the one version trained here has no previous one to roll back to.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from online.main import create_app
from shared.keys import SCOPES, create_key
from shared.settings import Settings
from tests.api.test_recommendations_api import train
from tests.conftest import TABLES_TO_CLEAN
from tests.processes import delete_keys, unique_key_prefix
from tests.shop import SMALL_SHOP, load_shop, stock_catalogue

EXAMPLES_PER_OPERATION = 25
# No rate limit gets in the fuzzer's way: a 429 would end an example before the handler runs.
UNLIMITED = "1000000/second"


def _fuzz_plan() -> list[Any]:
    """(operation, mode) for every operation the app declares, read from its OpenAPI document.

    Building the app opens nothing (the database pool opens in the lifespan), so collection
    needs no server, and a route added later is fuzzed without touching this file. Every
    operation gets positive examples; those that take input (parameters or a body) also get
    negative ones. An operation without input has nothing to break: Hypothesis would end in
    Unsatisfiable there, not in a test.
    """
    document = create_app(Settings(redis_url="redis://collection-only")).openapi()
    plan = []
    for path, operations in document["paths"].items():
        for method, spec in operations.items():
            label = f"{method.upper()} {path}"
            plan.append(pytest.param(label, GenerationMode.POSITIVE, id=f"{label} positive"))
            if spec.get("parameters") or spec.get("requestBody"):
                plan.append(pytest.param(label, GenerationMode.NEGATIVE, id=f"{label} negative"))
    return plan


@dataclass(frozen=True)
class FuzzShop:
    """A shop with a catalogue, one promoted model and a key holding every scope."""

    settings: Settings
    version: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
def fuzz_shop(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzShop]:
    """Built once for the module: training per operation would cost minutes.

    The function-scoped `clean_database` (behind `api_key`) would empty the tables under the
    shop before each test, so this fixture empties them once itself and makes its own key.
    """
    shop_settings = _shop_settings(database_url, redis_url, tmp_path_factory.mktemp("fuzz"))
    _empty_tables(database_url)
    load_shop(database_url, SMALL_SHOP)
    stock_catalogue(database_url)
    version = train(shop_settings)
    with psycopg.connect(database_url, autocommit=True) as conn:
        key = create_key(conn, name="fuzz", scopes=",".join(SCOPES)).key
    yield FuzzShop(shop_settings, version, key)
    delete_keys(redis_url, shop_settings.redis_key_prefix)


def _shop_settings(database_url: str, redis_url: str, root: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_key_prefix=unique_key_prefix(),
        data_dir=root / "var",
        artifact_dir=root / "artifacts",
        model_poll_seconds=0.2,
        rate_limit_recommend=UNLIMITED,
        rate_limit_events=UNLIMITED,
        rate_limit_admin=UNLIMITED,
        rate_limit_analyst=UNLIMITED,
    )


def _empty_tables(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES_TO_CLEAN)}")


@pytest.fixture
def serving_app(fuzz_shop: FuzzShop) -> Iterator[FastAPI]:
    """A fresh app of the shop's settings; its lifespan ends with the test.

    Schemathesis starts an ASGI app's lifespan on its first request and keeps it running for
    the rest of the process unless told otherwise, so the pool and the reloader thread are
    stopped here rather than left to outlive the module's database.
    """
    app = create_app(fuzz_shop.settings)
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()


@pytest.fixture
def schema(serving_app: FastAPI, fuzz_shop: FuzzShop) -> schemathesis.BaseSchema:
    """The app's own OpenAPI document; loading it starts the lifespan, then the model loads."""
    loaded = schemathesis.openapi.from_asgi("/openapi.json", serving_app)
    deadline = time.monotonic() + 10
    while serving_app.state.live_model.version != fuzz_shop.version:
        assert time.monotonic() < deadline, f"{fuzz_shop.version} not loaded within 10 s"
        time.sleep(0.02)
    return loaded


def documented_answer(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Each answer matches the response schema the operation documents, except 422 bodies.

    A 422 for invalid input comes from online/errors.py as {"error": "invalid_request",
    "detail": [{"loc", "error"}]}, while FastAPI documents it as HTTPValidationError (detail
    items with loc, msg, type): every such answer would fail here for that one reason.
    `test_the_documented_422_schema_is_what_the_app_sends` pins that mismatch; here a 422
    must at least be the app's clear JSON error.
    """
    if response.status_code == 422:
        body = response.json()
        assert isinstance(body, dict), f"a 422 that is not a JSON object: {response.text!r}"
        assert isinstance(body.get("error"), str), f"a 422 without an error code: {body!r}"
        return None
    return response_schema_conformance(ctx, response, case)


@pytest.mark.parametrize(("label", "mode"), _fuzz_plan())
def test_no_request_gets_a_server_error(
    schema: schemathesis.BaseSchema, fuzz_shop: FuzzShop, label: str, mode: GenerationMode
) -> None:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the schema"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,  # the same examples every run, so a failure reproduces as is
        database=None,  # and nothing is written under .hypothesis/
        # No shrinking: shrinking a failure costs minutes of database writes on the bulk
        # routes. Schemathesis prints the failing request as curl; add Phase.shrink here
        # locally to get it minimal.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def fuzz(case: Case) -> None:
        case.call_and_validate(
            headers=fuzz_shop.headers, checks=[not_a_server_error, documented_answer]
        )

    fuzz()


def test_the_documented_422_schema_is_what_the_app_sends(
    schema: schemathesis.BaseSchema, fuzz_shop: FuzzShop
) -> None:
    operation = schema["/v1/users/{user_id}/recommendations"]["GET"]
    case = operation.Case(path_parameters={"user_id": "u"}, query={"n": 0})
    response = case.call(headers=fuzz_shop.headers)
    assert response.status_code == 422
    case.validate_response(response, checks=[response_schema_conformance])


# Found by the fuzzer (events, items) and by probing the same cause by hand (event_id,
# category, model versions), pinned here as the smallest requests that show them. PostgreSQL
# text and jsonb cannot hold U+0000; the validators let it through and the database error
# (psycopg.DataError, which online/errors.py does not map) escapes as a 500. A clear 4xx (the
# batch routes may list the item as rejected) makes these pass.
NUL_REPRODUCERS = [
    pytest.param(
        "POST",
        "/v1/events",
        [{"user_id": "\x00", "item_id": "0", "type": "view"}],
        id="event user_id",
    ),
    pytest.param(
        "POST",
        "/v1/events",
        [{"event_id": "\x00", "user_id": "u", "item_id": "i", "type": "view"}],
        id="event event_id",
    ),
    pytest.param("PUT", "/v1/items", [{"item_id": "\x00"}], id="item item_id"),
    pytest.param("PUT", "/v1/items", [{"item_id": "i", "category": "\x00"}], id="item category"),
    pytest.param(
        "PUT", "/v1/items", [{"item_id": "i", "attributes": {"\x00": None}}], id="item attribute"
    ),
    pytest.param("GET", "/v1/admin/models/a%00b", None, id="model version"),
    pytest.param("POST", "/v1/admin/models/a%00b/promote", None, id="promoted version"),
]


@pytest.mark.parametrize(("method", "path", "body"), NUL_REPRODUCERS)
def test_a_nul_character_is_a_client_error(
    fuzz_shop: FuzzShop, method: str, path: str, body: Any
) -> None:
    app = create_app(fuzz_shop.settings)
    with TestClient(app, headers=fuzz_shop.headers, raise_server_exceptions=False) as client:
        response = client.request(method, path, json=body)
    assert 400 <= response.status_code < 500, (
        f"{method} {path} {body!r} -> {response.status_code} {response.text!r}"
    )
    assert isinstance(response.json().get("error"), str)
