"""The cost ledger on the real PostgreSQL: training phases, serving windows, budgets, the role."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from offline.runs import RunOutcome, execute_run
from shared import costs, registry
from shared.control.retrain import request_retrain
from shared.costs import measurement_cost, price_in_force, record_training_phases
from shared.hardware import HostInfo
from shared.metering import EnergyModel, Meter
from shared.settings import Settings
from shared.usage import UsageRecorder
from shared.usage_flush import flush_to_url, start_flusher
from tests.shop import SMALL_SHOP, load_shop

pytestmark = pytest.mark.timeout(240)
SMALL_MODEL = {"factors": 16, "iterations": 4}
PHASES = ["load", "build", "fit", "evaluate", "final_fit", "export"]
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"
REC = "/v1/users/{user_id}/recommendations"


@pytest.fixture
def shop(settings: Settings) -> Settings:
    """The test's settings over a freshly loaded small shop, with a small model."""
    load_shop(settings.require_database_url(), SMALL_SHOP)
    return settings.model_copy(update=SMALL_MODEL)


def retrain(settings: Settings, *, task_id: str | None = None) -> tuple[RunOutcome, Meter]:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        trigger = request_retrain(conn, settings, trigger="test", force=True)
        if task_id:
            registry.set_task_id(conn, trigger.run_id, task_id)
    meter = Meter(energy=EnergyModel())
    return execute_run(settings, trigger.run_id, meter=meter), meter


def ledger(database_url: str, run_id: uuid.UUID) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM training_phase_usage WHERE run_id = %s ORDER BY seq", (run_id,)
        ).fetchall()


def test_every_phase_of_an_inline_retrain_lands_as_the_meter_measured_it(shop: Settings) -> None:
    outcome, meter = retrain(shop, task_id="task-42")
    assert outcome.status == "promoted"
    rows = ledger(shop.require_database_url(), outcome.run_id)
    assert [r["phase"] for r in rows] == PHASES
    for row, measured in zip(rows, meter.measurements, strict=True):
        assert row["model_version"] == outcome.version
        assert row["task_id"] == "task-42"
        assert row["host"] == socket.gethostname()
        for name in ("started_at", "finished_at", "wall_seconds", "cpu_seconds"):
            assert row[name] == getattr(measured, name), name
        for name in ("peak_rss_bytes", "gpu_seconds", "energy_joules", "energy_source"):
            assert row[name] == getattr(measured, name), name
    with psycopg.connect(shop.require_database_url()) as conn:
        price = price_in_force(conn)
        run = conn.execute(
            "SELECT status, model_version, cost, cpu_seconds FROM cost_training_runs "
            "WHERE run_id = %s",
            (outcome.run_id,),
        ).fetchone()
    assert price is not None
    assert run is not None
    expected = sum(measurement_cost(price, m) for m in meter.measurements)
    assert run[:2] == ("promoted", outcome.version)
    assert run[2] == pytest.approx(expected, rel=1e-9)
    assert run[3] == pytest.approx(sum(m.cpu_seconds for m in meter.measurements))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_recorded_cpu_of_a_cpu_bound_phase_matches_the_kernel_within_5_percent(
    clean_database: str, tmp_path: Path
) -> None:
    meter = Meter(energy=EnergyModel(), rapl_root=tmp_path / "none")
    before = _kernel_cpu_seconds()
    with meter.measure("fit"):
        start = time.process_time()
        while time.process_time() - start < 0.8:
            sum(range(2000))
    kernel = _kernel_cpu_seconds() - before
    run_id = uuid.uuid4()
    with psycopg.connect(clean_database) as conn:
        written = record_training_phases(
            conn,
            run_id=run_id,
            model_version=None,
            measurements=meter.measurements,
            host=HostInfo.detect(),
        )
    assert written == 1
    [row] = ledger(clean_database, run_id)
    assert row["cpu_seconds"] == meter.measurements[0].cpu_seconds
    assert row["cpu_seconds"] == pytest.approx(kernel, rel=0.05)


def _kernel_cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_tiny_ceiling_stops_the_run_and_the_live_version_stays(shop: Settings) -> None:
    first, _ = retrain(shop)
    assert first.status == "promoted"
    outcome, meter = retrain(shop.model_copy(update={"training_cost_ceiling": 1e-12}))
    assert outcome.status == "over_budget"
    assert "stopped at the start of build" in (outcome.reason or "")
    url = shop.require_database_url()
    with psycopg.connect(url) as conn:
        assert registry.pointer(conn) == (first.version, None)
        run = registry.get_run(conn, outcome.run_id)
    assert run is not None
    assert run.status == "over_budget"
    assert [p["phase"] for p in run.phases] == ["load"]
    rows = ledger(url, outcome.run_id)
    assert [r["phase"] for r in rows] == ["load"]  # what was spent is still on the ledger
    assert rows[0]["cpu_seconds"] == meter.measurements[0].cpu_seconds


def test_a_ceiling_passed_inside_fit_stops_it_at_an_iteration_boundary(shop: Settings) -> None:
    with psycopg.connect(shop.require_database_url()) as conn:
        price = price_in_force(conn)
    assert price is not None
    ceiling = float(price.vcpu_hour) * 1.5 / 3600  # about 1.5 CPU-seconds
    slow = shop.model_copy(update={"iterations": 10_000, "training_cost_ceiling": ceiling})
    outcome, meter = retrain(slow)
    assert outcome.status == "over_budget"
    assert "stopped at fit iteration" in (outcome.reason or "")
    assert [m.phase for m in meter.measurements] == ["load", "build", "fit"]
    phases = ledger(shop.require_database_url(), outcome.run_id)
    assert [r["phase"] for r in phases] == ["load", "build", "fit"]


# --- serving ------------------------------------------------------------------------------


def served(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(requests), 0), coalesce(sum(throttled), 0), count(*) "
            "FROM inference_usage"
        ).fetchone()
    assert row is not None
    return {"requests": int(row[0]), "throttled": int(row[1]), "rows": int(row[2])}


def test_requests_of_two_processes_are_counted_exactly_once(clean_database: str) -> None:
    recorders = [UsageRecorder(window_seconds=0.05) for _ in range(2)]
    with ConnectionPool(clean_database, min_size=1, max_size=2, open=True) as pool:
        flushers = [start_flusher(r, pool, interval=0.03) for r in recorders]

        def serve(recorder: UsageRecorder) -> None:
            for i in range(3000):
                recorder.record(REC, "v1", 429 if i % 100 == 0 else 200, 0.001, items=10)
                if i % 500 == 0:
                    time.sleep(0.02)

        threads = [threading.Thread(target=serve, args=(r,)) for r in recorders for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for flusher in flushers:
            flusher.stop()
    assert served(clean_database)["requests"] == 4 * 2970
    assert served(clean_database)["throttled"] == 4 * 30
    assert all(r.pending_rows == 0 for r in recorders)


def test_a_shutdown_flush_writes_the_open_window(clean_database: str) -> None:
    recorder = UsageRecorder(window_seconds=3600)
    for _ in range(3):
        recorder.record(REC, "v1", 200, 0.002, items=5)
    assert flush_to_url(recorder, clean_database) == 0  # the hour is not over
    assert flush_to_url(recorder, clean_database, final=True) == 1
    with psycopg.connect(clean_database) as conn:
        row = conn.execute("SELECT requests, items, window_seconds FROM inference_usage").fetchone()
    assert row is not None
    assert row[:2] == (3, 15)
    assert 0 < row[2] < 60


def test_a_database_outage_loses_no_counts(clean_database: str) -> None:
    recorder = UsageRecorder(window_seconds=0.05)
    for _ in range(4):
        for _ in range(25):
            recorder.record(REC, "v1", 200, 0.001)
        time.sleep(0.06)
        assert flush_to_url(recorder, UNREACHABLE, timeout=2) == 0
    assert recorder.pending_rows >= 4
    for _ in range(25):
        recorder.record(REC, "v1", 200, 0.001)
    assert flush_to_url(recorder, clean_database, final=True) >= 5
    assert served(clean_database)["requests"] == 125
    assert recorder.pending_rows == 0
    assert recorder.dropped_rows == 0


def test_past_the_bound_rows_are_dropped_and_counted(clean_database: str) -> None:
    recorder = UsageRecorder(window_seconds=0.02, max_pending_rows=3)
    for _ in range(8):
        for _ in range(10):
            recorder.record(REC, "v1", 200, 0.001)
        time.sleep(0.03)
        flush_to_url(recorder, UNREACHABLE, timeout=2)
    assert recorder.pending_rows <= 3
    assert recorder.dropped_rows >= 5
    flush_to_url(recorder, clean_database, final=True)
    assert served(clean_database)["requests"] + recorder.dropped_requests == 80


@pytest.fixture
def costs_conn(clean_database: str) -> Iterator[psycopg.Connection]:
    """A connection whose work is rolled back at the end (the price book is not truncated)."""
    with psycopg.connect(clean_database) as conn:
        yield conn
        conn.rollback()


def test_the_seeded_price_version_cites_its_source(costs_conn: psycopg.Connection) -> None:
    [seed] = [p for p in costs.list_prices(costs_conn) if p.price_id == 1]
    assert seed.currency == "USD"
    assert not seed.energy_billed
    assert "cloud.google.com" in seed.source
    assert "eia.gov" in seed.source
    assert "List prices as of 2024-10-17" in seed.note
