"""Small synthetic shops written straight into the test database."""

from __future__ import annotations

import numpy as np
import psycopg

from shared.confidence import EventColumns
from shared.event_store import EventWriter
from shared.events import Event
from shared.synthetic import ShopConfig, as_events, generate_catalog, generate_events


def shop_events(config: ShopConfig) -> list[Event]:
    return as_events(generate_events(config, generate_catalog(config)))


def load_shop(database_url: str, config: ShopConfig) -> int:
    """Write the shop's events; returns how many."""
    events = shop_events(config)
    writer = EventWriter()
    with psycopg.connect(database_url) as conn:
        for start in range(0, len(events), 20_000):
            writer.write(conn, events[start : start + 20_000])
    return len(events)


def stock_catalogue(database_url: str) -> None:
    """Every item of the log in one of four categories, one in ten unavailable."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO items (item_id, category, available) "
            "SELECT DISTINCT item_id, 'cat-' || (abs(hashtext(item_id)) % 4), "
            "abs(hashtext(item_id)) % 10 <> 0 FROM events"
        )


# Enough categories that users' tastes differ: the planted structure a model should find.
SMALL_SHOP = ShopConfig(
    n_users=1_500, n_items=600, n_categories=16, n_events=45_000, days=30, seed=3
)


def two_block_events(block: int = 20, *, end: float = 1_700_000_000.0) -> EventColumns:
    """The planted structure of the ranking tests: 2 x `block` shoppers and items; each shopper
    views 12 of the items of their own block ("a.." or "b..") once, up to `end`."""
    rng = np.random.default_rng(7)
    users, items = [], []
    for u in range(2 * block):
        own = u // block
        for i in rng.choice(block, size=12, replace=False):
            users.append(f"u{u:02d}")
            items.append(f"{'ab'[own]}{i:02d}")
    times = end - np.arange(len(users), dtype=np.float64)
    return EventColumns.from_arrays(users, items, ["view"] * len(users), occurred_at=times)
