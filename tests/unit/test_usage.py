"""Serving counters in memory: windows, CPU sharing, histogram quantiles, the buffer bound."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from shared.metering import GIB, EnergyModel
from shared.settings import Settings
from shared.usage import IDLE_ROUTE, UsageRecorder
from shared.usage_rows import (
    LATENCY_BOUNDS_MS,
    N_BUCKETS,
    UsageRow,
    bucket_index,
    quantile_ms,
    vcpus_per_process,
)

BASE = 60.0 * 28_000_000  # an epoch time on a window boundary (March 2023)
REC = "/v1/users/{user_id}/recommendations"
EVENTS = "/v1/events"


@dataclass
class FakeClocks:
    """Wall and CPU clocks the test moves by hand."""

    now: float = BASE
    cpu: float = 0.0

    def advance(self, seconds: float, *, cpu: float = 0.0) -> None:
        self.now += seconds
        self.cpu += cpu


def recorder(clocks: FakeClocks, **kwargs: object) -> UsageRecorder:
    options: dict[str, object] = {
        "window_seconds": 60.0,
        "vcpus_per_process": 2.0,
        "clock": lambda: clocks.now,
        "cpu_clock": lambda: clocks.cpu,
        "rss": lambda: GIB,
        "energy": EnergyModel(watts_per_core=3.5, watts_per_gb=0.4),
    }
    options.update(kwargs)
    return UsageRecorder(**options)  # type: ignore[arg-type]


def by_route(rows: list[UsageRow]) -> dict[str, UsageRow]:
    return {row.route: row for row in rows}


def test_requests_errors_throttled_and_items_are_counted_per_route_and_version() -> None:
    clocks = FakeClocks()
    usage = recorder(clocks)
    usage.record(REC, "v1", 200, 0.004, items=10)
    usage.record(REC, "v1", 200, 0.006, items=10)
    usage.record(REC, "v1", 503, 0.001)
    usage.record(REC, "v1", 429, 0.0001)
    usage.record(EVENTS, None, 202, 0.002)
    clocks.advance(60)
    rows = usage.take_pending()
    assert {(r.route, r.model_version) for r in rows} == {(REC, "v1"), (EVENTS, None)}
    rec = by_route(rows)[REC]
    assert (rec.requests, rec.errors, rec.throttled, rec.items) == (3, 1, 1, 20)
    assert sum(rec.latency_buckets) == 3  # refused requests are not in the histogram
    assert len(rec.latency_buckets) == N_BUCKETS
    assert usage.take_pending() == []


def test_a_window_closes_only_when_its_time_is_up() -> None:
    clocks = FakeClocks()
    usage = recorder(clocks)
    usage.record(REC, "v1", 200, 0.01)
    clocks.advance(59.9)
    assert usage.take_pending() == []
    clocks.advance(0.1)
    [row] = usage.take_pending()
    assert row.window_seconds == pytest.approx(60.0)
    assert row.window_start.timestamp() == BASE
    assert row.window_end.timestamp() == BASE + 60


def test_cpu_memory_energy_and_allocation_are_shared_by_handler_time() -> None:
    clocks = FakeClocks()
    usage = recorder(clocks)
    usage.record(REC, "v1", 200, 0.009)
    usage.record(EVENTS, None, 202, 0.001)
    clocks.advance(60, cpu=2.0)
    rows = by_route(usage.take_pending())
    assert rows[REC].cpu_seconds == pytest.approx(1.8)
    assert rows[EVENTS].cpu_seconds == pytest.approx(0.2)
    assert rows[REC].allocated_vcpu_seconds == pytest.approx(0.9 * 2.0 * 60)
    assert rows[REC].ram_gb_seconds == pytest.approx(0.9 * 60)  # 1 GiB resident
    energy = EnergyModel(watts_per_core=3.5, watts_per_gb=0.4).estimate(
        cpu_seconds=2.0, peak_rss_bytes=GIB, wall_seconds=60
    )
    assert rows[REC].energy_joules + rows[EVENTS].energy_joules == pytest.approx(energy)


def test_an_idle_window_is_still_written_so_idle_capacity_is_priced() -> None:
    clocks = FakeClocks()
    usage = recorder(clocks)
    usage.set_model_version("v7")
    clocks.advance(120, cpu=0.5)
    rows = usage.take_pending()
    assert [(r.route, r.model_version, r.requests) for r in rows] == [
        (IDLE_ROUTE, "v7", 0),
        (IDLE_ROUTE, "v7", 0),
    ]
    assert sum(r.allocated_vcpu_seconds for r in rows) == pytest.approx(2.0 * 120)
    assert sum(r.cpu_seconds for r in rows) == pytest.approx(0.5)


def test_cpu_read_late_is_spread_over_the_windows_it_spans() -> None:
    clocks = FakeClocks()
    usage = recorder(clocks)
    clocks.advance(30)
    usage.record(REC, "v1", 200, 0.01)
    clocks.advance(60, cpu=3.0)  # read at t=90: 60 s in window 1, 30 s in window 2
    usage.record(REC, "v1", 200, 0.01)
    [first] = usage.take_pending()
    assert first.cpu_seconds == pytest.approx(2.0)
    clocks.advance(30)
    [second] = usage.take_pending()
    assert second.cpu_seconds == pytest.approx(1.0)


def test_a_recorder_started_mid_window_is_charged_from_its_start() -> None:
    clocks = FakeClocks(now=BASE + 45)
    usage = recorder(clocks)
    usage.record(REC, "v1", 200, 0.01)
    clocks.advance(15)
    [row] = usage.take_pending()
    assert row.window_seconds == pytest.approx(15.0)
    assert row.allocated_vcpu_seconds == pytest.approx(30.0)


def test_a_final_close_writes_the_open_window_and_the_rest_of_it_gets_a_new_key() -> None:
    clocks = FakeClocks()
    usage = recorder(clocks)
    usage.record(REC, "v1", 200, 0.01)
    clocks.advance(20, cpu=1.0)
    [closed] = usage.take_pending(final=True)
    assert closed.window_seconds == pytest.approx(20.0)
    assert closed.window_end.timestamp() == BASE + 20
    assert closed.cpu_seconds == pytest.approx(1.0)
    usage.record(REC, "v1", 200, 0.01)  # a request still in flight at shutdown
    clocks.advance(40)
    [rest] = usage.take_pending()
    assert rest.window_start == closed.window_start
    assert rest.recorder_id != closed.recorder_id
    assert rest.window_seconds == pytest.approx(40.0)


def test_the_bound_drops_the_oldest_rows_and_counts_them(caplog: pytest.LogCaptureFixture) -> None:
    clocks = FakeClocks()
    usage = recorder(clocks, max_pending_rows=2)
    for _ in range(5):
        usage.record(REC, "v1", 200, 0.01)
        usage.record(REC, "v1", 429, 0.0)
        clocks.advance(60)
    usage.close_windows()
    assert usage.pending_rows == 2
    assert usage.dropped_rows == 3
    assert usage.dropped_requests == 6  # answered and refused requests of 3 windows
    kept = usage.take_pending()
    assert [r.window_start.timestamp() for r in kept] == [BASE + 180, BASE + 240]
    assert "dropped the 1 oldest rows" in caplog.text


def test_requeued_rows_go_back_ahead_of_newer_ones() -> None:
    clocks = FakeClocks()
    usage = recorder(clocks)
    usage.record(REC, "v1", 200, 0.01)
    clocks.advance(60)
    first = usage.take_pending()
    usage.record(REC, "v1", 200, 0.01)
    clocks.advance(60)
    usage.requeue(first)
    assert [r.window_start for r in usage.take_pending()] == [
        first[0].window_start,
        datetime.fromtimestamp(BASE + 60, UTC),
    ]


def test_concurrent_records_are_all_counted() -> None:
    usage = UsageRecorder(window_seconds=0.05)

    def serve() -> None:
        for _ in range(2000):
            usage.record(REC, "v1", 200, 0.001)

    threads = [threading.Thread(target=serve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = usage.take_pending(final=True)
    assert sum(r.requests for r in rows) == 16_000


def test_record_many_counts_like_one_record_per_request() -> None:
    clocks = FakeClocks()
    one_by_one, batched = recorder(clocks), recorder(clocks)
    answers = [(200, 0.004, 10), (200, 0.0005, 10), (503, 0.2, 0), (429, 0.0001, 0)]
    for status in (200, 503, 429):
        of_status = [(s, latency, items) for s, latency, items in answers if s == status]
        buckets = [0] * N_BUCKETS
        for _, latency, items in of_status:
            one_by_one.record(REC, "v1", status, latency, items=items)
            buckets[bucket_index(latency * 1000.0)] += 1
        batched.record_many(
            REC,
            "v1",
            status,
            latency_buckets=buckets,
            busy_seconds=sum(latency for _, latency, _ in of_status),
            items=sum(items for _, _, items in of_status),
        )
    clocks.advance(60)
    [expected] = one_by_one.take_pending()
    [got] = batched.take_pending()
    assert (got.requests, got.errors, got.throttled, got.items) == (3, 1, 1, 20)
    assert got.latency_buckets == expected.latency_buckets
    assert (got.requests, got.errors, got.throttled, got.items) == (
        expected.requests,
        expected.errors,
        expected.throttled,
        expected.items,
    )
    with pytest.raises(ValueError, match="latency buckets"):
        batched.record_many(REC, "v1", 200, latency_buckets=[1], busy_seconds=0.1)


@pytest.mark.parametrize(
    ("latency_ms", "bucket"),
    [(0.0, 0), (0.5, 0), (0.51, 1), (1.0, 1), (10.0, 6), (10_000.0, 21), (10_001.0, 22)],
)
def test_a_latency_equal_to_a_bound_falls_in_that_bucket(latency_ms: float, bucket: int) -> None:
    assert bucket_index(latency_ms) == bucket


def test_quantiles_interpolate_inside_the_bucket() -> None:
    counts = [0] * N_BUCKETS
    counts[1] = 10  # (0.5, 1] ms
    counts[2] = 10  # (1, 2] ms
    assert quantile_ms(counts, 0.5) == pytest.approx(1.0)
    assert quantile_ms(counts, 0.75) == pytest.approx(1.5)
    assert quantile_ms(counts, 1.0) == pytest.approx(2.0)
    assert quantile_ms([0] * N_BUCKETS, 0.5) is None
    only_slow = [0] * N_BUCKETS
    only_slow[-1] = 3
    assert quantile_ms(only_slow, 0.99) == LATENCY_BOUNDS_MS[-1]


def test_allocated_vcpus_per_process_come_from_settings() -> None:
    assert vcpus_per_process(Settings(serving_vcpus=8, serving_processes=4)) == 2.0
    assert vcpus_per_process(Settings(serving_vcpus=8, workers=2)) == 4.0
