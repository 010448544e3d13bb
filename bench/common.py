"""Helpers shared by the benchmark scripts: a scratch database, medians, a served API."""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from shared.migrate import upgrade
from shared.synthetic import ShopConfig

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A freshly migrated database on RECSYS_BENCH_POSTGRES_URL's server, dropped afterwards."""
    server = os.environ.get("RECSYS_BENCH_POSTGRES_URL", DEFAULT_SERVER)
    url = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade(url)
    try:
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float:
    return statistics.median(values)


def bench_key(database_url: str, scopes: str) -> str:
    """A fresh API key with these scopes in the benchmark's database."""
    from shared.keys import create_key

    with psycopg.connect(database_url, autocommit=True) as conn:
        return create_key(conn, name="bench", scopes=scopes).key


def bench_server_env() -> dict[str, str]:
    """Server settings for benchmarks: the local Redis under a prefix of its own, limits off."""
    prefix = f"recsys-bench-{os.getpid()}:"
    return {
        "RECSYS_REDIS_URL": os.environ.get("RECSYS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "RECSYS_REDIS_KEY_PREFIX": prefix,
        "RECSYS_RATE_LIMIT_EVENTS": "1000000/second",
        "RECSYS_RATE_LIMIT_RECOMMEND": "1000000/second",
    }


def bench_shop(args: argparse.Namespace) -> ShopConfig:
    """The synthetic shop the benchmarks share: sizes from --users/--items/--categories/
    --events, 90 days, seed 1."""
    return ShopConfig(
        n_users=args.users,
        n_items=args.items,
        n_categories=args.categories,
        n_events=args.events,
        days=90,
        seed=1,
    )
