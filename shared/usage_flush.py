"""Write a process's serving counters in the background, off the request path.

`start_flusher(recorder, pool, interval=...)` starts a daemon thread that flushes every
`interval` seconds and, when settings with daily budgets are given, logs a crossed daily
budget once per day and path (and hands the paths over budget to `on_budgets`, e.g. for a
gauge). `Flusher.stop()` flushes the open window before returning.

Wiring into the API (done in online/metering.py, which gives the flusher a connection of its
own per flush rather than the pool's), once per process after the pool opens::

    from shared.usage import UsageRecorder
    from shared.usage_flush import start_flusher

    recorder = UsageRecorder.from_settings(settings)
    app.state.usage = recorder
    flusher = start_flusher(recorder, pool, interval=settings.usage_flush_interval_seconds,
                            settings=settings)
    try:
        yield
    finally:
        flusher.stop()  # writes the open window too, before the pool closes

and a middleware that times each request and calls ``recorder.record(route template,
model version that answered or None, status, seconds, items returned)``; pass the route
template (``request.scope["route"].path``), never the raw path. The rate limiter's 429s are
recorded like any answer: they land in `throttled`. The reloader calls
``recorder.set_model_version(version)`` when it swaps models, so idle windows are charged to
the version that was loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import date
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.cost_queries import BudgetStatus, warn_on_daily_budgets
from shared.settings import Settings
from shared.usage import UsageRecorder

log = logging.getLogger(__name__)
Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
OnBudgets = Callable[[list[BudgetStatus]], None]
BUDGET_CHECK_SECONDS = 300.0  # a daily budget needs no finer watch; each check is a query


def flush_with(recorder: UsageRecorder, connect: Connect, *, final: bool = False) -> int:
    """Flush through a connection from `connect`; on a database outage keep the rows, log, 0.

    Windows are closed first, so the buffer bound applies even when no connection comes.
    """
    recorder.close_windows(final=final)
    try:
        with connect() as conn:
            return recorder.flush(conn)
    except (psycopg.Error, PoolTimeout) as exc:
        log.warning(
            "usage not written (%s); %d rows kept for the next flush",
            exc,
            recorder.pending_rows,
        )
        return 0


def flush_to_url(
    recorder: UsageRecorder, database_url: str, *, final: bool = False, timeout: int = 5
) -> int:
    """Flush over a connection of its own (scripts, tests; the API uses its pool)."""
    return flush_with(
        recorder, lambda: psycopg.connect(database_url, connect_timeout=timeout), final=final
    )


class Flusher:
    """A daemon thread flushing one recorder every `interval` seconds until `stop()`."""

    def __init__(
        self,
        recorder: UsageRecorder,
        connect: Connect,
        *,
        interval: float,
        settings: Settings | None = None,
        on_budgets: OnBudgets | None = None,
    ) -> None:
        self.recorder = recorder
        self._connect = connect
        self._interval = interval
        self._settings = settings
        self._on_budgets = on_budgets
        self._warned: set[tuple[date, str]] = set()
        self._next_budget_check = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage-flusher", daemon=True)

    def start(self) -> Flusher:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def stop(self, *, timeout: float = 30.0) -> int:
        """Stop the thread and write everything, the open window included; rows written."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        written = flush_with(self.recorder, self._connect, final=True)
        if self.recorder.pending_rows:
            log.error("usage lost at shutdown: %d rows not written", self.recorder.pending_rows)
        return written

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                flush_with(self.recorder, self._connect)
                self._check_budgets()
            except Exception:  # the thread must outlive any one failure
                log.exception("usage flush failed")

    def _check_budgets(self) -> None:
        if self._settings is None or time.monotonic() < self._next_budget_check:
            return
        self._next_budget_check = time.monotonic() + BUDGET_CHECK_SECONDS
        try:
            with self._connect() as conn:
                over = warn_on_daily_budgets(conn, self._settings, already_warned=self._warned)
            if self._on_budgets is not None:
                self._on_budgets(over)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("daily budget not checked: %s", exc)


def start_flusher(
    recorder: UsageRecorder,
    pool: ConnectionPool,
    *,
    interval: float,
    settings: Settings | None = None,
) -> Flusher:
    """Flush `recorder` through `pool` every `interval` seconds in a background thread."""
    return Flusher(recorder, pool.connection, interval=interval, settings=settings).start()
