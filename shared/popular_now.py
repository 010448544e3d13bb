"""What sells now, straight from the event log: the API's answer before any version exists.

A shop that has just sent its first events gets popular lists at once instead of 503s: each
API process ranks items by the shoppers who touched them in the last `WINDOW_DAYS`, each
weighted by the recency of their latest event, 2^(-age / HALF_LIFE_DAYS) (the same rule as the
trained popularity baseline, shared.popularity). With no holdout yet to choose from, the
constants are set on principle: a week's half-life follows what is selling now without
forgetting the week before, over a month of events. One grouped query; values bound.
"""

from __future__ import annotations

import numpy as np
import psycopg

__all__ = ["HALF_LIFE_DAYS", "WINDOW_DAYS", "popular_now"]

HALF_LIFE_DAYS = 7.0
WINDOW_DAYS = 30
MAX_ITEMS = 100_000  # the most popular items kept; the rest of the catalogue scores 0

_POPULAR_NOW = """
WITH newest AS (SELECT max(occurred_at) AS at FROM events),
latest AS (
    SELECT e.user_id, e.item_id, max(e.occurred_at) AS at
    FROM events e, newest
    WHERE e.occurred_at > newest.at - make_interval(days => %(window)s)
    GROUP BY e.user_id, e.item_id
)
SELECT latest.item_id,
       sum(power(2.0, -extract(epoch FROM newest.at - latest.at) / 86400.0 / %(half_life)s))
FROM latest, newest
GROUP BY latest.item_id
ORDER BY 2 DESC, 1
LIMIT %(limit)s
"""


def popular_now(conn: psycopg.Connection) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, scores) of the items shoppers touched lately, most popular first."""
    rows = conn.execute(
        _POPULAR_NOW, {"window": WINDOW_DAYS, "half_life": HALF_LIFE_DAYS, "limit": MAX_ITEMS}
    ).fetchall()
    ids = np.array([row[0] for row in rows], dtype=str)
    scores = np.array([float(row[1]) for row in rows], dtype=np.float32)
    return ids, scores
