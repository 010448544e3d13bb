"""The database pool of one Celery worker pool process: opened after fork, closed at exit.

A pool (its sockets and background threads) must not cross a fork, so the prefork parent
never opens one; each pool process opens its own in `worker_process_init` (see celery_app).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from shared.db import create_pool
from shared.settings import Settings

_pool: ConnectionPool | None = None
_opened_in: int | None = None


@contextmanager
def connection(settings: Settings) -> Iterator[psycopg.Connection]:
    """An autocommit connection for a task: from this process's pool, or (outside a worker
    pool process, e.g. a task run eagerly in a test) a connection of its own."""
    if _pool is not None and _opened_in == os.getpid():
        with _pool.connection() as conn:
            yield conn
        return
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        yield conn


def open_worker_pool(settings: Settings) -> ConnectionPool:
    """Open this process's pool (connecting in the background, so a slow database
    delays the first query rather than the worker's start)."""
    global _pool, _opened_in
    if _pool is None or _opened_in != os.getpid():
        _pool = create_pool(
            settings.require_database_url(),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            autocommit=True,
        )
        _pool.open(wait=False)
        _opened_in = os.getpid()
    return _pool


def close_worker_pool() -> None:
    """Close this process's pool, if it opened one."""
    global _pool, _opened_in
    if _pool is not None and _opened_in == os.getpid():
        _pool.close(timeout=5)
    _pool = None
    _opened_in = None


def worker_pool() -> ConnectionPool:
    """The pool of this worker pool process, for tasks; an error anywhere else."""
    if _pool is None or _opened_in != os.getpid():
        raise RuntimeError("no database pool in this process: tasks run in a prefork pool process")
    return _pool


def database_status(timeout: float = 5.0) -> dict[str, Any] | None:
    """`SELECT 1` through this process's pool and which pid opened it; None without a pool."""
    if _pool is None or _opened_in != os.getpid():
        return None
    with _pool.connection(timeout=timeout) as conn:
        row = conn.execute("SELECT 1").fetchone()
    return {"pool_pid": _opened_in, "select_one": row[0] if row else None}
