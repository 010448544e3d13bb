"""The API's Prometheus metrics: the families, and the text exposition served at /metrics.

Each app gets a registry of its own, so apps built side by side (tests) never share counts.
Under `recsys serve` every uvicorn worker is a process: the command points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers start (prometheus_client
reads it when first imported), each worker's values live in mmapped files there, and a
scrape, answered by whichever worker gets it, sums every worker's files
(MultiProcessCollector). Counters add up across workers; each gauge says how in its
`multiprocess_mode` ("livemax": the largest value among the workers alive).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from online.instrumentation import LATENCY_BOUNDS_S, RequestCell
from shared.cost_queries import PATHS

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
FALLBACK_REASONS = ("cold_start", "popular_fill", "no_model", "realtime_unavailable")
RATE_LIMIT_COUNTS = ("fail_open", "rejected", "unavailable")


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, None in one-process mode: prometheus_client chose
    the mode when first imported, so a variable set later (or unset) does not count."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """Every metric family of one app, created at once so a scrape always lists them all."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._http()
        self._model()
        self._serving()

    def _http(self) -> None:
        self.requests = Counter(
            "recsys_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recsys_http_request_duration_seconds",
            "Time from a request's arrival to its last byte sent, by route template.",
            ["route", "method"],
            buckets=LATENCY_BOUNDS_S,  # the cost ledger's bounds (shared/usage.py)
            registry=self.registry,
        )

    def _model(self) -> None:
        self.model_info = Gauge(
            "recsys_model_info",
            "1 for the model version an API process serves, 0 for versions it served before.",
            ["version"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.model_age = Gauge(
            "recsys_model_age_seconds",
            "Age of the served model version (oldest across processes; 0 before one loads).",
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.swaps = Counter(
            "recsys_model_swaps",
            "Times an API process started serving another model version.",
            registry=self.registry,
        )
        self.refused = Counter(
            "recsys_model_refused",
            "Promoted model versions an API process refused to load (unreadable or corrupt).",
            registry=self.registry,
        )

    def _serving(self) -> None:
        self.fallbacks = Counter(
            "recsys_recommendation_fallbacks",
            "Answers that fell back: cold_start (unknown user: popular items), popular_fill "
            "(list filled from popular items), no_model (503), realtime_unavailable (Redis "
            "down: the trained vector without the newest events).",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limits = {
            count: Counter(
                f"recsys_ratelimit_{count}",
                f"Rate-limit checks by scope: {count.replace('_', ' ')} (online/ratelimit.py).",
                ["scope"],
                registry=self.registry,
            )
            for count in RATE_LIMIT_COUNTS
        }
        self.rate_limit_redis_errors = Counter(
            "recsys_ratelimit_redis_errors",
            "Rate limiter calls to Redis that failed.",
            registry=self.registry,
        )
        self.realtime_failures = Counter(
            "recsys_realtime_failures",
            "Recent-event reads (fetch) and writes (append) that Redis failed or the "
            "breaker skipped (*_skipped).",
            ["operation"],
            registry=self.registry,
        )
        self.budget_exceeded = Gauge(
            "recsys_budget_exceeded",
            "1 when today's (UTC) cost of the path is over its daily budget.",
            ["path"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.usage_pending_rows = Gauge(
            "recsys_usage_pending_rows",
            "Serving usage rows waiting in memory for the database (summed over processes).",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.usage_dropped_requests = Counter(
            "recsys_usage_dropped_requests",
            "Requests whose usage rows were dropped: the in-memory backlog filled up while "
            "the database was unreachable.",
            registry=self.registry,
        )
        for reason in FALLBACK_REASONS:
            self.fallbacks.labels(reason)
        for path in PATHS:
            self.budget_exceeded.labels(path)

    def observe_many(self, route: str, method: str, cell: RequestCell) -> None:
        """Add a tally cell's latencies to the histogram at once.

        prometheus_client has no bulk observe, and calling observe() per request is what the
        tally avoids; its children keep one value per bucket (not cumulative) and a sum.
        """
        child = self.latency.labels(route, method)
        for bucket, count in zip(child._buckets, cell.counts, strict=True):
            if count:
                bucket.inc(count)
        child._sum.inc(cell.seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every metric: all workers' under `recsys serve`, else this app's."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=path)
        return generate_latest(merged), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Drop a stopping worker's live gauges from the multiprocess files (counters stay)."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, path)
