"""The `retrain_settings` table: overrides of the model and serving settings chosen at runtime.

The tradeoff lab (`recsys tradeoff --apply`), the tuner and operators add a row; the newest
row is in force and overrides the environment's model and serving settings in every later
retrain (offline/retrain_config.py). Rows are never updated, so the history of choices stays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from shared.model_spec import ModelParams
from shared.serving_strategy import ServingStrategy

Source = Literal["operator", "tradeoff", "tuning"]
_MODEL_FIELDS = frozenset(asdict(ModelParams()))


@dataclass(frozen=True)
class StoredOverrides:
    settings_id: int
    created_at: datetime
    source: str
    model: dict[str, Any]
    serving: dict[str, Any]
    origin: dict[str, Any]
    note: str | None


def save_overrides(
    conn: psycopg.Connection,
    *,
    source: Source,
    model: dict[str, Any],
    serving: dict[str, Any] | None = None,
    origin: dict[str, Any] | None = None,
    note: str | None = None,
) -> StoredOverrides:
    """Add a row (checked first: a bad choice never reaches a retrain); the caller commits."""
    unknown = sorted(set(model) - _MODEL_FIELDS)
    if unknown:
        raise ValueError(f"unknown model settings: {', '.join(unknown)}")
    ModelParams.from_dict({**asdict(ModelParams()), **model})  # raises on bad values
    serving = serving or {}
    ServingStrategy.from_dict({**ServingStrategy().to_dict(), **serving})
    with conn.cursor(row_factory=class_row(StoredOverrides)) as cur:
        cur.execute(
            "INSERT INTO retrain_settings (source, model, serving, origin, note)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING *",
            (source, Jsonb(model), Jsonb(serving), Jsonb(origin or {}), note),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def overrides_in_force(conn: psycopg.Connection) -> StoredOverrides | None:
    """The newest row, or None when nothing was chosen at runtime (the environment rules)."""
    with conn.cursor(row_factory=class_row(StoredOverrides)) as cur:
        cur.execute("SELECT * FROM retrain_settings ORDER BY settings_id DESC LIMIT 1")
        return cur.fetchone()
