"""What one API process meters, and its life: started and stopped by the app's lifespan.

- `publish()` hands over what was counted since its last call: the middleware's request
  tally (online/instrumentation.py) to the UsageRecorder and to the Prometheus metrics, and
  the rate limiter's and recent-event store's counters, the model's age and the usage
  backlog to the metrics. A task calls it every second (requests reach the recorder's
  current window up to that late; a scrape answered by one worker sees the others' counts
  that fresh), /metrics before each scrape, the shutdown once more.
- With RECSYS_METERING on, the recorder's windows are written by a flusher thread over a
  connection of its own per flush (a pooled connection the database dropped during an
  outage would fail the shutdown flush), and the open window at shutdown.
- Model swaps and refusals arrive from the reloader (a LiveModel observer); the daily
  budgets from the flusher thread's budget check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from contextlib import suppress
from functools import partial

import psycopg

from online.instrumentation import RequestMeter
from online.live_model import LiveModel
from online.prometheus import Metrics, mark_process_dead
from online.ratelimit import RateLimitCounters
from online.recent import RecentEvents
from shared.cost_queries import PATHS, BudgetStatus
from shared.ranking.recommender import Recommender
from shared.settings import Settings
from shared.usage import UsageRecorder
from shared.usage_flush import Flusher

log = logging.getLogger(__name__)
PUBLISH_SECONDS = 1.0  # how late requests reach the recorder, and other workers' scrapes
FLUSH_CONNECT_TIMEOUT = 5  # seconds; the flusher thread waits this long on a dead database
REALTIME_READS = ("fetch", "fetch_skipped")  # reads that left a list without recent events


class ServingMeter:
    """One per app: request metering, the Prometheus metrics and everything feeding them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.requests = RequestMeter()
        self._live: LiveModel | None = None
        self._rate_limits: RateLimitCounters | None = None
        self._recent: RecentEvents | None = None
        self._recorder: UsageRecorder | None = None
        self._flusher: Flusher | None = None
        self._task: asyncio.Task[None] | None = None
        self._published: Counter[tuple[str, str]] = Counter()  # outside counters, as of last

    async def start(
        self, live: LiveModel, rate_limits: RateLimitCounters, recent: RecentEvents | None
    ) -> None:
        """Start metering this process (in the lifespan: after uvicorn forked it)."""
        self._live, self._rate_limits, self._recent = live, rate_limits, recent
        if self.settings.metering:
            recorder = UsageRecorder.from_settings(self.settings)
            recorder.set_model_version(live.version)
            self._recorder = recorder
            connect = partial(
                psycopg.connect,
                self.settings.require_database_url(),
                connect_timeout=FLUSH_CONNECT_TIMEOUT,
            )
            self._flusher = Flusher(
                recorder,
                connect,
                interval=self.settings.usage_flush_interval_seconds,
                settings=self.settings,
                on_budgets=self.budgets_checked,
            ).start()
        self._task = asyncio.create_task(self._publish_every(PUBLISH_SECONDS))

    async def stop(self) -> None:
        """Hand over the last counts, write the usage (open window included), leave."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        self.publish()
        if self._flusher is not None:
            self._flusher.stop()
        mark_process_dead(os.getpid())

    def publish(self) -> None:
        """Hand everything counted since the last call to the recorder and the metrics."""
        tally = self.requests.take()
        metrics, recorder = self.metrics, self._recorder
        for (route, method, status, version), cell in tally.cells.items():
            metrics.requests.labels(route, method, str(status)).inc(sum(cell.counts))
            metrics.observe_many(route, method, cell)
            if recorder is not None:
                recorder.record_many(
                    route,
                    version,
                    status,
                    latency_buckets=cell.counts,
                    busy_seconds=cell.seconds,
                    items=cell.items,
                )
        for reason, count in tally.fallbacks.items():
            metrics.fallbacks.labels(reason).inc(count)
        self._publish_rate_limits()
        self._publish_realtime()
        self._publish_model_age()
        self._publish_usage()

    # --- observers ------------------------------------------------------------------------

    def model_swapped(self, previous: str | None, current: Recommender) -> None:
        """A new version serves (a catalogue refresh of the same version is no swap)."""
        if previous == current.version:
            return
        if previous is not None:
            self.metrics.model_info.labels(previous).set(0)
        self.metrics.model_info.labels(current.version).set(1)
        self.metrics.swaps.inc()
        if self._recorder is not None:
            self._recorder.set_model_version(current.version)  # idle windows are charged to it

    def model_refused(self, version: str) -> None:
        self.metrics.refused.inc()

    def budgets_checked(self, over: list[BudgetStatus]) -> None:
        """The flusher's daily budget check: `over` lists today's paths past their budget."""
        exceeded = {status.path for status in over}
        for path in PATHS:
            self.metrics.budget_exceeded.labels(path).set(1.0 if path in exceeded else 0.0)

    # --- publishing -----------------------------------------------------------------------

    async def _publish_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                self.publish()
            except Exception:  # the task must outlive any one failure
                log.exception("metrics not published")

    def _delta(self, source: str, key: str, total: int) -> int:
        """How much an outside cumulative counter grew since it was last published."""
        delta = total - self._published[source, key]
        self._published[source, key] = total
        return delta

    def _publish_rate_limits(self) -> None:
        counters = self._rate_limits
        if counters is None:
            return
        by_count = {
            "fail_open": counters.fail_open,
            "rejected": counters.rejected,
            "unavailable": counters.unavailable,
        }
        for count, by_scope in by_count.items():
            for scope, total in list(by_scope.items()):
                if delta := self._delta(count, scope, total):
                    self.metrics.rate_limits[count].labels(scope).inc(delta)
        if delta := self._delta("redis_errors", "", counters.redis_errors):
            self.metrics.rate_limit_redis_errors.inc(delta)

    def _publish_realtime(self) -> None:
        if self._recent is None:
            return
        failures = dict(self._recent.failures)  # appends count from worker threads too
        for operation, total in failures.items():
            if delta := self._delta("realtime", operation, total):
                self.metrics.realtime_failures.labels(operation).inc(delta)
                if operation in REALTIME_READS:
                    self.metrics.fallbacks.labels("realtime_unavailable").inc(delta)

    def _publish_model_age(self) -> None:
        current = self._live.current if self._live is not None else None
        if current is not None:
            self.metrics.model_age.set(time.time() - current.created_at.timestamp())

    def _publish_usage(self) -> None:
        recorder = self._recorder
        if recorder is not None:
            self.metrics.usage_pending_rows.set(recorder.pending_rows)
            if delta := self._delta("usage", "dropped_requests", recorder.dropped_requests):
                self.metrics.usage_dropped_requests.inc(delta)
