"""Seeded synthetic shops (catalogue and event log) for the demo, tests and benchmarks.

Imports only `shared` (numpy aside), so every side of the layout may use it.
"""

from __future__ import annotations

from shared.synthetic.catalog import generate_catalog
from shared.synthetic.config import Catalog, EventLog, ShopConfig
from shared.synthetic.events import generate_events
from shared.synthetic.writers import (
    as_events,
    write_catalog_csv,
    write_demo_files,
    write_events_csv,
    write_events_jsonl,
)

__all__ = [
    "Catalog",
    "EventLog",
    "ShopConfig",
    "as_events",
    "generate_catalog",
    "generate_events",
    "write_catalog_csv",
    "write_demo_files",
    "write_events_csv",
    "write_events_jsonl",
]
