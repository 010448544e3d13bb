"""Read the cost ledger for people: a period's summary, a timeline, budgets (CLI, report).

Costs come from the views of migration 0004. `price_id` re-prices every row with that one
price version (through the SQL function `cost_of`); without it each row keeps the version
that was in force at its time. Days are UTC; `since` and `until` are inclusive days.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import psycopg
from psycopg.rows import class_row

from shared.settings import Settings

log = logging.getLogger(__name__)
PATHS = ("training", "inference")

# Cost expressions: the view's own price, or a named version when %(price_id)s is given.
_TRAINING_COST = (
    "CASE WHEN %(price_id)s::bigint IS NULL THEN cost ELSE cost_of(cpu_seconds, "
    "ram_gb_seconds, gpu_seconds, energy_joules, %(price_id)s::bigint) END"
)
_USED_COST = (
    "CASE WHEN %(price_id)s::bigint IS NULL THEN used_cost ELSE cost_of(cpu_seconds, "
    "ram_gb_seconds, 0, energy_joules, %(price_id)s::bigint) END"
)
_ALLOCATED_COST = (
    "CASE WHEN %(price_id)s::bigint IS NULL THEN allocated_cost ELSE cost_of("
    "allocated_vcpu_seconds, ram_gb_seconds, 0, energy_joules, %(price_id)s::bigint) END"
)
_CURRENCY = (
    "coalesce((SELECT p.currency FROM price_book p WHERE p.price_id = %(price_id)s::bigint), "
    "currency)"
)
_PERIOD = "(%(since)s::timestamptz IS NULL OR {t} >= %(since)s) AND " + (
    "(%(until)s::timestamptz IS NULL OR {t} < %(until)s)"
)


@dataclass(frozen=True)
class VersionCost:
    """One model version's costs in a period (model_version None: work of no version)."""

    model_version: str | None
    currency: str | None
    training_cost: float
    inference_used_cost: float
    inference_allocated_cost: float
    requests: int
    errors: int
    throttled: int
    cost_per_1000: float | None
    amortized_cost_per_1000: float | None
    cost_avoided_by_throttling: float | None


@dataclass(frozen=True)
class TimelinePoint:
    """Costs and requests in one hour or day."""

    at: datetime
    training_cost: float
    inference_used_cost: float
    inference_allocated_cost: float
    requests: int


@dataclass(frozen=True)
class VersionQuality:
    """A version's offline quality beside what training it cost (for cost-against-NDCG)."""

    version: str
    created_at: datetime
    status: str
    live: bool
    ndcg: float | None
    training_cost: float | None


@dataclass(frozen=True)
class BudgetStatus:
    """One path's cost on one day against its daily budget (None: no budget set)."""

    day: date
    path: str
    cost: float
    budget: float | None
    currency: str

    @property
    def exceeded(self) -> bool:
        """Whether the day's cost passed the budget."""
        return self.budget is not None and self.cost > self.budget


def period_bounds(since: date | None, until: date | None) -> tuple[datetime | None, ...]:
    """[since 00:00 UTC, the day after until 00:00 UTC) as timestamps; None stays open."""
    start = datetime.combine(since, time(), UTC) if since else None
    end = datetime.combine(until + timedelta(days=1), time(), UTC) if until else None
    return start, end


def _params(since: date | None, until: date | None, price_id: int | None) -> dict[str, Any]:
    start, end = period_bounds(since, until)
    return {"since": start, "until": end, "price_id": price_id}


def summary(
    conn: psycopg.Connection,
    *,
    since: date | None = None,
    until: date | None = None,
    price_id: int | None = None,
) -> list[VersionCost]:
    """Training and serving cost per model version in the period, most expensive first."""
    query = f"""
    WITH t AS (
        SELECT model_version, {_CURRENCY} AS currency, sum({_TRAINING_COST}) AS training
        FROM cost_training_phases WHERE {_PERIOD.format(t="started_at")}
        GROUP BY 1, 2
    ), i AS (
        SELECT model_version, {_CURRENCY} AS currency, sum({_USED_COST}) AS used,
               sum({_ALLOCATED_COST}) AS allocated, sum(requests) AS requests,
               sum(errors) AS errors, sum(throttled) AS throttled
        FROM cost_inference_windows WHERE {_PERIOD.format(t="window_start")}
        GROUP BY 1, 2
    )
    SELECT coalesce(t.model_version, i.model_version), coalesce(t.currency, i.currency),
           coalesce(t.training, 0), coalesce(i.used, 0),
           coalesce(i.allocated, 0), coalesce(i.requests, 0)::bigint,
           coalesce(i.errors, 0)::bigint, coalesce(i.throttled, 0)::bigint,
           i.allocated / nullif(i.requests, 0) * 1000,
           (coalesce(t.training, 0) + coalesce(i.allocated, 0)) / nullif(i.requests, 0) * 1000,
           i.throttled * i.used / nullif(i.requests, 0)
    FROM t FULL JOIN i  -- coalesce: the work of no version (null) is one row, not two
        ON coalesce(t.model_version, '') = coalesce(i.model_version, '')
        AND coalesce(t.currency, '') = coalesce(i.currency, '')
    ORDER BY coalesce(t.training, 0) + coalesce(i.allocated, 0) DESC, 1
    """
    rows = conn.execute(query, _params(since, until, price_id)).fetchall()
    return [VersionCost(*row) for row in rows]


def timeline(
    conn: psycopg.Connection,
    *,
    currency: str,
    bucket: Literal["hour", "day"] = "day",
    since: date | None = None,
    until: date | None = None,
    price_id: int | None = None,
) -> list[TimelinePoint]:
    """Costs per hour or UTC day in one currency, oldest first (empty buckets left out)."""
    query = f"""
    SELECT date_trunc(%(bucket)s, at, 'UTC') AS at, sum(training) AS training_cost,
           sum(used) AS inference_used_cost, sum(allocated) AS inference_allocated_cost,
           sum(requests)::bigint AS requests
    FROM (
        SELECT started_at AS at, {_TRAINING_COST} AS training, 0 AS used, 0 AS allocated,
               0 AS requests, {_CURRENCY} AS currency
        FROM cost_training_phases WHERE {_PERIOD.format(t="started_at")}
        UNION ALL
        SELECT window_start, 0, {_USED_COST}, {_ALLOCATED_COST}, requests, {_CURRENCY}
        FROM cost_inference_windows WHERE {_PERIOD.format(t="window_start")}
    ) x
    WHERE currency = %(currency)s
    GROUP BY 1 ORDER BY 1
    """
    params = {**_params(since, until, price_id), "bucket": bucket, "currency": currency}
    with conn.cursor(row_factory=class_row(TimelinePoint)) as cur:
        return cur.execute(query, params).fetchall()


def version_quality(
    conn: psycopg.Connection,
    *,
    since: date | None = None,
    until: date | None = None,
    price_id: int | None = None,
) -> list[VersionQuality]:
    """Versions created in the period with their candidate NDCG and training cost."""
    query = f"""
    SELECT v.version, v.created_at, v.status::text, (p.version IS NOT NULL) AS live,
           (v.metrics -> 'candidate' ->> 'ndcg')::float8 AS ndcg, c.training_cost
    FROM model_versions v
    LEFT JOIN model_pointer p ON p.version = v.version
    LEFT JOIN (
        SELECT model_version, sum({_TRAINING_COST}) AS training_cost
        FROM cost_training_phases GROUP BY 1
    ) c ON c.model_version = v.version
    WHERE {_PERIOD.format(t="v.created_at")}
    ORDER BY v.created_at
    """
    with conn.cursor(row_factory=class_row(VersionQuality)) as cur:
        return cur.execute(query, _params(since, until, price_id)).fetchall()


# --- daily budgets --------------------------------------------------------------------------


def _budgets(settings: Settings) -> dict[str, float | None]:
    return {
        "training": settings.daily_budget_training,
        "inference": settings.daily_budget_inference,
    }


def budget_days(
    conn: psycopg.Connection, settings: Settings, *, since: date | None, until: date | None
) -> list[BudgetStatus]:
    """Every day and path with cost in the period, against the daily budgets (cost_currency)."""
    start, end = period_bounds(since, until)
    rows = conn.execute(
        "SELECT day, path, sum(cost) FROM cost_daily WHERE currency = %s "
        "AND (%s::date IS NULL OR day >= %s::date) AND (%s::date IS NULL OR day < %s::date) "
        "GROUP BY day, path ORDER BY day, path",
        (
            settings.cost_currency,
            start.date() if start else None,
            start.date() if start else None,
            end.date() if end else None,
            end.date() if end else None,
        ),
    ).fetchall()
    budgets = _budgets(settings)
    return [
        BudgetStatus(day, path, float(cost or 0), budgets[path], settings.cost_currency)
        for day, path, cost in rows
    ]


def budget_status(conn: psycopg.Connection, day: date, settings: Settings) -> list[BudgetStatus]:
    """Training and inference cost of one UTC day against their budgets (for /metrics)."""
    found = {s.path: s for s in budget_days(conn, settings, since=day, until=day)}
    budgets = _budgets(settings)
    return [
        found.get(path, BudgetStatus(day, path, 0.0, budgets[path], settings.cost_currency))
        for path in PATHS
    ]


def warn_on_daily_budgets(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    paths: Iterable[str] = PATHS,
    day: date | None = None,
    already_warned: set[tuple[date, str]] | None = None,
) -> list[BudgetStatus]:
    """Log a warning for each path over its daily budget today; returns those over it.

    `already_warned` (kept by a long-lived caller) makes each day and path warn once.
    """
    if settings.daily_budget_training is None and settings.daily_budget_inference is None:
        return []
    today = day or datetime.now(UTC).date()
    wanted = set(paths)
    over = [s for s in budget_status(conn, today, settings) if s.exceeded and s.path in wanted]
    for status in over:
        if already_warned is not None:
            if (status.day, status.path) in already_warned:
                continue
            already_warned.add((status.day, status.path))
        log.warning(
            "daily %s budget crossed on %s: %.4f %s spent of %.4f",
            status.path,
            status.day,
            status.cost,
            status.currency,
            status.budget,
        )
    return over
