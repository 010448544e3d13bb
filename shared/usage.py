"""Serving counters of one API process, kept in memory and written per window, never per request.

`UsageRecorder.record()` runs on the request path: a lock, a few additions, no I/O;
`record_many()` takes requests already tallied elsewhere in one call (the API's middleware
hands over its tally about once a second: online/metering.py). Counts are kept per (window,
route, model version); a window closes when a record or a flush finds the clock past its
end. `flush(conn)` writes the closed windows in one multi-row INSERT (chunked
in one transaction when a backlog is large); rows stay in memory while the database is
unreachable, up to a bound past which the oldest are dropped, counted and logged.

Process CPU (`time.process_time()`: every thread, the flusher included) is read once per
window roll, spread over the windows it spans by time, then shared among a window's routes by
their share of handler time (sum of latencies). By count, a 50 us health probe would be
charged like a 5 ms recommendation; measuring CPU per request is not possible for async
handlers that interleave on one thread. A window without requests still writes one row,
route "(idle)", so the capacity held while idle is priced (allocated cost).

The row it writes, its latency histogram and the INSERT are in shared/usage_rows.py.

How to wire it into the API: see shared/usage_flush.py.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil
import psycopg

from shared.costs import energy_model
from shared.metering import GIB, EnergyModel
from shared.settings import Settings
from shared.usage_rows import N_BUCKETS, UsageRow, bucket_index, vcpus_per_process, write_rows

log = logging.getLogger(__name__)
IDLE_ROUTE = "(idle)"
THROTTLED = 429


@dataclass
class _Counter:
    requests: int = 0
    errors: int = 0
    throttled: int = 0
    items: int = 0
    busy_seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * N_BUCKETS)

    def add(self, status: int, latency_s: float, items: int) -> None:
        self.busy_seconds += max(latency_s, 0.0)
        if status == THROTTLED:
            self.throttled += 1
            return
        self.requests += 1
        self.errors += status >= 500
        self.items += items
        self.buckets[bucket_index(latency_s * 1000.0)] += 1

    def add_many(self, status: int, buckets: Sequence[int], busy_s: float, items: int) -> None:
        count = sum(buckets)
        self.busy_seconds += max(busy_s, 0.0)
        if status == THROTTLED:
            self.throttled += count
            return
        self.requests += count
        self.errors += count if status >= 500 else 0
        self.items += items
        for i, n in enumerate(buckets):
            self.buckets[i] += n


@dataclass
class _Window:
    start: float  # epoch seconds, a multiple of the window length
    end: float
    covered_from: float  # later than start for the window a recorder starts in
    cpu_seconds: float = 0.0
    counters: dict[tuple[str, str | None], _Counter] = field(default_factory=dict)


@dataclass(frozen=True)
class _Identity:
    host: str
    pid: int


class UsageRecorder:
    """In-memory serving counters of one process; thread-safe; `record` does no I/O."""

    def __init__(
        self,
        *,
        window_seconds: float = 60.0,
        vcpus_per_process: float = 1.0,
        max_pending_rows: int = 100_000,
        energy: EnergyModel | None = None,
        clock: Callable[[], float] = time.time,
        cpu_clock: Callable[[], float] = time.process_time,
        rss: Callable[[], int] | None = None,
    ) -> None:
        if window_seconds <= 0 or max_pending_rows < 1:
            raise ValueError("window_seconds must be > 0 and max_pending_rows >= 1")
        self.window_seconds = window_seconds
        self.vcpus_per_process = vcpus_per_process
        self.max_pending_rows = max_pending_rows
        self.energy = energy or EnergyModel()
        self.recorder_id = uuid.uuid4()
        self.dropped_rows = 0
        self.dropped_requests = 0
        self._clock, self._cpu_clock = clock, cpu_clock
        self._rss = rss or (lambda: int(psutil.Process().memory_info().rss))
        self._identity = _Identity(socket.gethostname(), os.getpid())
        self._lock = threading.Lock()
        self._model_version: str | None = None
        self._pending: list[UsageRow] = []
        now = clock()
        self._time_mark, self._cpu_mark = now, cpu_clock()
        self._window = self._new_window(self._aligned(now), covered_from=now)

    @classmethod
    def from_settings(cls, settings: Settings) -> UsageRecorder:
        """A recorder with the window, allocation, bound and energy model from settings."""
        return cls(
            window_seconds=settings.usage_window_seconds,
            vcpus_per_process=vcpus_per_process(settings),
            max_pending_rows=settings.usage_max_pending_rows,
            energy=energy_model(settings),
        )

    def record(
        self, route: str, model_version: str | None, status: int, latency_s: float, items: int = 0
    ) -> None:
        """Count one answered request (status 429: one refused by the rate limiter)."""
        now = self._clock()
        with self._lock:
            self._counter(now, route, model_version).add(status, latency_s, items)

    def record_many(
        self,
        route: str,
        model_version: str | None,
        status: int,
        *,
        latency_buckets: Sequence[int],
        busy_seconds: float,
        items: int = 0,
    ) -> None:
        """Count requests of one route, version and status at once: `latency_buckets` holds
        how many fell in each bucket (as bucket_index() assigns them), `busy_seconds` their
        latencies summed. For callers that tally per request and hand over in batches (the
        API's middleware, online/instrumentation.py): the batch lands in the current window.
        """
        if len(latency_buckets) != N_BUCKETS:
            raise ValueError(f"{len(latency_buckets)} latency buckets; expected {N_BUCKETS}")
        now = self._clock()
        with self._lock:
            counter = self._counter(now, route, model_version)
            counter.add_many(status, latency_buckets, busy_seconds, items)

    def set_model_version(self, model_version: str | None) -> None:
        """Say which version is loaded now, so idle windows are charged to it (the reloader)."""
        with self._lock:
            self._model_version = model_version

    @property
    def pending_rows(self) -> int:
        """Closed-window rows not written yet."""
        with self._lock:
            return len(self._pending)

    def close_windows(self, *, final: bool = False) -> None:
        """Turn windows that ended into pending rows; `final` closes the open one too."""
        with self._lock:
            self._advance(self._clock(), close_open=final)

    def take_pending(self, *, final: bool = False) -> list[UsageRow]:
        """Close what is due and hand over every pending row (give back with `requeue`)."""
        with self._lock:
            self._advance(self._clock(), close_open=final)
            batch, self._pending = self._pending, []
            return batch

    def flush(self, conn: psycopg.Connection, *, final: bool = False) -> int:
        """Write the closed windows (and the open one when `final`); returns rows written.

        On a database error the rows are kept for the next flush and the error propagates.
        """
        batch = self.take_pending(final=final)
        try:
            write_rows(conn, batch)
        except BaseException:
            self.requeue(batch)
            raise
        return len(batch)

    def requeue(self, rows: Sequence[UsageRow]) -> None:
        """Put back rows that could not be written, ahead of newer ones, within the bound."""
        with self._lock:
            self._pending[:0] = rows
            self._apply_bound()

    # --- inside the lock ----------------------------------------------------------------

    def _counter(self, now: float, route: str, model_version: str | None) -> _Counter:
        """The open window's counter of (route, version), after closing windows that ended."""
        if now >= self._window.end:
            self._advance(now)
        if model_version is not None:
            self._model_version = model_version
        key = (route, model_version)
        counter = self._window.counters.get(key)
        if counter is None:
            counter = self._window.counters[key] = _Counter()
        return counter

    def _aligned(self, at: float) -> float:
        return at - at % self.window_seconds

    def _new_window(self, start: float, *, covered_from: float | None = None) -> _Window:
        return _Window(
            start, start + self.window_seconds, start if covered_from is None else covered_from
        )

    def _advance(self, now: float, *, close_open: bool = False) -> None:
        """Read the CPU clock, spread it over the windows since the last reading, close them."""
        now = max(now, self._time_mark)
        windows = [self._window]
        while windows[-1].end <= now:
            windows.append(self._new_window(windows[-1].end))
        cpu = self._cpu_clock()
        self._spread_cpu(windows, cpu - self._cpu_mark, now)
        self._time_mark, self._cpu_mark = now, cpu
        *closed, current = windows
        rss = self._rss()
        rows = [row for w in closed for row in self._rows(w, w.end, rss)]
        if close_open:
            rows += self._rows(current, now, rss)
            current = self._new_window(current.start, covered_from=now)
            self.recorder_id = uuid.uuid4()  # the rest of this window must not share its key
        self._window = current
        self._pending.extend(rows)
        self._apply_bound()

    def _spread_cpu(self, windows: list[_Window], cpu: float, now: float) -> None:
        span = now - self._time_mark
        for w in windows:
            overlap = min(w.end, now) - max(w.covered_from, self._time_mark)
            if span > 0:
                w.cpu_seconds += max(cpu, 0.0) * max(overlap, 0.0) / span
            elif w is windows[-1]:
                w.cpu_seconds += max(cpu, 0.0)

    def _rows(self, w: _Window, covered_to: float, rss: int) -> list[UsageRow]:
        """A window's rows; CPU, memory, energy and allocation shared by handler time."""
        seconds = max(covered_to - w.covered_from, 0.0)
        if seconds == 0 and not w.counters:
            return []  # nothing happened and no time passed (a second close at shutdown)
        counters = w.counters or {(IDLE_ROUTE, self._model_version): _Counter()}
        weights = _weights(list(counters.values()))
        energy = self.energy.estimate(
            cpu_seconds=w.cpu_seconds, peak_rss_bytes=rss, wall_seconds=seconds
        )
        start = datetime.fromtimestamp(w.start, UTC)
        end = datetime.fromtimestamp(min(covered_to, w.end), UTC)
        return [
            UsageRow(
                window_start=start,
                window_end=end,
                window_seconds=seconds,
                recorder_id=self.recorder_id,
                host=self._identity.host,
                pid=self._identity.pid,
                route=route,
                model_version=version,
                requests=c.requests,
                errors=c.errors,
                throttled=c.throttled,
                items=c.items,
                cpu_seconds=w.cpu_seconds * share,
                ram_gb_seconds=rss / GIB * seconds * share,
                energy_joules=energy * share,
                allocated_vcpu_seconds=self.vcpus_per_process * seconds * share,
                latency_buckets=list(c.buckets),
            )
            for ((route, version), c), share in zip(counters.items(), weights, strict=True)
        ]

    def _apply_bound(self) -> None:
        over = len(self._pending) - self.max_pending_rows
        if over <= 0:
            return
        dropped = self._pending[:over]
        del self._pending[:over]
        requests = sum(row.requests + row.throttled for row in dropped)
        self.dropped_rows += over
        self.dropped_requests += requests
        log.warning(
            "usage buffer full (%d rows): dropped the %d oldest rows (%d requests); "
            "%d rows dropped since start",
            self.max_pending_rows,
            over,
            requests,
            self.dropped_rows,
        )


def _weights(counters: list[_Counter]) -> list[float]:
    """Each route's share of a window: by handler time, else by count, else equal."""
    for values in (
        [c.busy_seconds for c in counters],
        [float(c.requests + c.throttled) for c in counters],
    ):
        total = sum(values)
        if total > 0:
            return [v / total for v in values]
    return [1.0 / len(counters)] * len(counters)
