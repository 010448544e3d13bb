"""`recsys costs report --html FILE`: one self-contained HTML page of what the shop spends.

Four charts (cost per day or hour by path; cumulative training against serving cost with the
crossover marked; cost per 1,000 recommendations; training cost against NDCG per version)
and the tables behind them. Inline SVG and CSS only: the file can be mailed or archived.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import escape
from itertools import accumulate
from typing import Any, Literal

import psycopg

from shared import cost_queries, costs, svg_charts
from shared.cost_queries import TimelinePoint, VersionCost
from shared.settings import Settings
from shared.svg_charts import Marker, Point

HOURLY_UP_TO_DAYS = 3  # bars and rates: a shorter period is drawn per hour, a longer per day
CUMULATIVE_HOURLY_UP_TO_DAYS = 31  # the crossover needs finer points than the bars
_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 980px;
       color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.meta { color: #666; } .cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; min-width: 118px; }
.card b { display: block; font-size: 18px; }
table { border-collapse: collapse; margin-top: 8px; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; white-space: nowrap; }
.over { color: #c0392b; font-weight: 600; }
svg { margin-top: 10px; font-size: 11px; } svg .title { font-size: 14px; font-weight: 600; }
svg .grid { stroke: #e6e6e6; } svg .axis-label { fill: #555; }
svg .marker-line { stroke: #c0392b; stroke-dasharray: 4 3; }
svg .marker-text { fill: #c0392b; font-weight: 600; } svg .point-label { fill: #333; }
"""


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, read once."""

    since: date | None
    until: date | None
    currency: str
    price: costs.Price | None  # the re-pricing version, if any
    bucket: Literal["hour", "day"]
    timeline: list[TimelinePoint]
    cumulative_bucket: Literal["hour", "day"]
    cumulative: list[TimelinePoint]
    versions: list[VersionCost]
    quality: list[cost_queries.VersionQuality]
    crossovers: dict[str, datetime]
    budgets: list[cost_queries.BudgetStatus]


def load_report(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    since: date | None = None,
    until: date | None = None,
    price_id: int | None = None,
) -> ReportData:
    """Read the ledger for the period (re-priced with `price_id` when given)."""
    price = costs.get_price(conn, price_id) if price_id is not None else None
    currency = price.currency if price else settings.cost_currency
    period: dict[str, Any] = {"since": since, "until": until, "price_id": price_id}
    daily = cost_queries.timeline(conn, currency=currency, bucket="day", **period)
    fine = len(daily) <= CUMULATIVE_HOURLY_UP_TO_DAYS
    hourly = cost_queries.timeline(conn, currency=currency, bucket="hour", **period) if fine else []
    bucket: Literal["hour", "day"] = "hour" if len(daily) <= HOURLY_UP_TO_DAYS else "day"
    rows = conn.execute(
        "SELECT model_version, inference_overtook_training_at FROM cost_by_model_version "
        "WHERE inference_overtook_training_at IS NOT NULL"
    ).fetchall()
    return ReportData(
        since=since,
        until=until,
        currency=currency,
        price=price,
        bucket=bucket,
        timeline=hourly if bucket == "hour" else daily,
        cumulative_bucket="hour" if fine else "day",
        cumulative=hourly if fine else daily,
        versions=cost_queries.summary(conn, **period),
        quality=cost_queries.version_quality(conn, **period),
        crossovers=dict(rows),
        budgets=cost_queries.budget_days(conn, settings, since=since, until=until),
    )


def render_report(data: ReportData) -> str:
    """The whole HTML page."""
    sections = [
        _header(data),
        _cards(data),
        _charts(data),
        "<h2>Per model version</h2>" + _versions_table(data),
        "<h2>Daily budgets</h2>" + _budgets_table(data),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>recsys cost report</title><style>{_CSS}</style></head><body>"
        + "".join(sections)
        + "</body></html>"
    )


def _header(data: ReportData) -> str:
    period = f"{data.since or 'the beginning'} to {data.until or 'now'} (UTC days)"
    pricing = (
        f"re-priced with price version {data.price.price_id} ({escape(data.price.source[:80])})"
        if data.price
        else "each row priced with the price version in force at its time"
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<h1>What training and serving cost</h1><p class='meta'>{escape(period)}; "
        f"{escape(pricing)}; costs in {escape(data.currency)}; generated {generated}.</p>"
    )


def _cards(data: ReportData) -> str:
    training = sum(v.training_cost for v in data.versions)
    allocated = sum(v.inference_allocated_cost for v in data.versions)
    used = sum(v.inference_used_cost for v in data.versions)
    requests = sum(v.requests for v in data.versions)
    throttled = sum(v.throttled for v in data.versions)
    avoided = sum(v.cost_avoided_by_throttling or 0.0 for v in data.versions)
    per_1000 = f"{allocated / requests * 1000:.4g}" if requests else "-"
    cards = [
        ("training", f"{training:.4g}"),
        ("serving, allocated", f"{allocated:.4g}"),
        ("serving, used", f"{used:.4g}"),
        ("requests", f"{requests:,}"),
        ("per 1,000 requests", per_1000),
        ("refused (429)", f"{throttled:,}"),
    ]
    html = "".join(f"<div class='card'>{escape(n)}<b>{escape(v)}</b></div>" for n, v in cards)
    return f"<div class='cards'>{html}</div><p class='meta'>Requests refused by the rate " + (
        f"limiter would have cost about {avoided:.3g} {escape(data.currency)} to serve "
        "(refused x average used cost per request).</p>"
    )


def _charts(data: ReportData) -> str:
    if not data.timeline:
        return "<p>No metered cost in this period.</p>"
    times = [p.at for p in data.timeline]
    unit = f"{data.currency} per {data.bucket}"
    by_path = svg_charts.stacked_bars(
        f"Cost per {data.bucket} by path",
        times,
        {
            "training": [p.training_cost or 0.0 for p in data.timeline],
            "serving (allocated)": [p.inference_allocated_cost or 0.0 for p in data.timeline],
        },
        y_label=unit,
    )
    return by_path + _cumulative_chart(data) + _per_1000_chart(data) + _quality_chart(data)


def _cumulative_chart(data: ReportData) -> str:
    """Cumulative costs at the end of each bucket, from zero, with the first crossover."""
    points = data.cumulative
    step = timedelta(hours=1) if data.cumulative_bucket == "hour" else timedelta(days=1)
    times = [points[0].at] + [p.at + step for p in points]
    training = [0.0, *accumulate(p.training_cost or 0.0 for p in points)]
    serving = [0.0, *accumulate(p.inference_allocated_cost or 0.0 for p in points)]
    marker = crossover(times, training, serving)
    return svg_charts.time_lines(
        "Cumulative cost: training against serving",
        times,
        {"training": list(training), "serving (allocated)": list(serving)},
        y_label=data.currency,
        markers=[marker] if marker else [],
    )


def crossover(times: list[datetime], training: list[float], serving: list[float]) -> Marker | None:
    """Where cumulative serving cost first passes a training cost (linear between points).

    Serving that starts before any training cost in the period passes nothing yet.
    """
    for i in range(1, len(times)):
        before, after = serving[i - 1] - training[i - 1], serving[i] - training[i]
        if before <= 0 < after and training[i] > 0:
            fraction = -before / (after - before)
            at = times[i - 1] + (times[i] - times[i - 1]) * fraction
            value = training[i - 1] + (training[i] - training[i - 1]) * fraction
            return Marker(at, value, f"serving passed training {at:%Y-%m-%d %H:%M}")
    return None


def _per_1000_chart(data: ReportData) -> str:
    def per_1000(cost: float | None, requests: int | None) -> float | None:
        return (cost or 0.0) / requests * 1000 if requests else None

    return svg_charts.time_lines(
        "Serving cost per 1,000 recommendations",
        [p.at for p in data.timeline],
        {
            "allocated": [per_1000(p.inference_allocated_cost, p.requests) for p in data.timeline],
            "used": [per_1000(p.inference_used_cost, p.requests) for p in data.timeline],
        },
        y_label=f"{data.currency} per 1,000",
    )


def _quality_chart(data: ReportData) -> str:
    points = [
        Point(q.training_cost, q.ndcg, q.version, q.live)
        for q in data.quality
        if q.ndcg is not None and q.training_cost is not None
    ]
    if not points:
        return "<p>No model version with both a metered training cost and an NDCG.</p>"
    return svg_charts.scatter(
        "Training cost against NDCG per model version (larger: live)",
        points,
        x_label=f"training cost ({data.currency})",
        y_label="NDCG (candidate, holdout)",
    )


def _versions_table(data: ReportData) -> str:
    head = (
        "version", "training", "serving allocated", "serving used", "requests",
        "per 1,000", "amortized per 1,000", "refused (429)", "serving passed training",
    )  # fmt: skip
    rows = [
        (
            v.model_version or "(none)",
            f"{v.training_cost:.4g}",
            f"{v.inference_allocated_cost:.4g}",
            f"{v.inference_used_cost:.4g}",
            f"{v.requests:,}",
            _maybe(v.cost_per_1000),
            _maybe(v.amortized_cost_per_1000),
            f"{v.throttled:,}",
            _when(data.crossovers.get(v.model_version or "")),
        )
        for v in data.versions
    ]
    return _table(head, rows)


def _budgets_table(data: ReportData) -> str:
    rows = [
        (str(b.day), b.path, f"{b.cost:.4g}", _maybe(b.budget), "over" if b.exceeded else "")
        for b in data.budgets
        if b.budget is not None
    ]
    if not rows:
        return "<p>No daily budget set, or no cost on a day with a budget.</p>"
    return _table(("day", "path", "cost", "budget", ""), rows)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=over' if c == 'over' else ''}>{escape(c)}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{header}</tr>{body}</table>"


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
