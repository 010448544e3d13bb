"""Database access: URLs, connections, pools and advisory locks (psycopg 3)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool

from shared.settings import Settings

# Advisory lock keys, one per kind of exclusive work (any stable 64-bit numbers).
LOCK_MIGRATIONS = 7_310_001
LOCK_PARTITIONS = 7_310_002
LOCK_RETRAIN = 7_310_003


def resolve_database_url(settings: Settings) -> str:
    """The configured URL, or the embedded server's when RECSYS_DATABASE_URL is unset."""
    if settings.database_url:
        return settings.database_url
    from shared.embedded import embedded_postgres_url

    return embedded_postgres_url(settings.data_dir)


def sqlalchemy_url(database_url: str) -> str:
    """The same URL spelled for SQLAlchemy's psycopg 3 dialect (used by Alembic only)."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {database_url!r}")


def connect(database_url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """One plain connection, for CLI commands and scripts."""
    return psycopg.connect(database_url, autocommit=autocommit)


def create_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 8, autocommit: bool = False
) -> ConnectionPool:
    """A connection pool for a long-lived process; open it after any fork."""
    return ConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        name="recsys",
        kwargs={"autocommit": True} if autocommit else None,
    )


@contextmanager
def advisory_xact_lock(conn: psycopg.Connection, key: int) -> Iterator[None]:
    """Hold a transaction-scoped advisory lock for the block (released at commit/rollback)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
    yield
