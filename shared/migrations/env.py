"""Alembic environment: migrations are plain SQL; a session advisory lock serialises runners."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from shared.db import LOCK_MIGRATIONS


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Taken before Alembic reads the current revision, so a second runner waits and then
        # finds nothing left to do instead of applying the same revision twice.
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_MIGRATIONS})
        connection.commit()
        try:
            context.configure(connection=connection, transactional_ddl=True)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_MIGRATIONS})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `recsys db upgrade`")
run_migrations_online()
