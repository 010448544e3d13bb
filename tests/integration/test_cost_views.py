"""The analyst views on a hand-built ledger with known answers, the read-only role, budgets.

Every test works inside one transaction that is rolled back (the price book is not truncated
between tests, and the fixture's price must not leak into other tests).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from shared import cost_queries, costs
from shared.hardware import HostInfo
from shared.metering import GIB, PhaseMeasurement
from shared.settings import Settings
from shared.usage_rows import LATENCY_BOUNDS_MS, N_BUCKETS, UsageRow, quantile_ms, write_rows

DAY = datetime(2030, 1, 2, tzinfo=UTC)
RUN = uuid.UUID("00000000-0000-0000-0000-0000000000a1")
REC = "/v1/users/{user_id}/recommendations"
ANALYST_VIEWS = (
    "cost_prices",
    "cost_training_phases",
    "cost_training_runs",
    "cost_inference_windows",
    "cost_inference_daily",
    "cost_daily",
    "cost_by_model_version",
)


@pytest.fixture
def conn(clean_database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(clean_database) as connection:
        yield connection
        connection.rollback()


def phase(name: str, start: datetime, **values: float | int | str) -> PhaseMeasurement:
    wall = float(values["wall_seconds"])
    return PhaseMeasurement(
        phase=name,
        started_at=start,
        finished_at=start + timedelta(seconds=wall),
        wall_seconds=wall,
        cpu_seconds=float(values["cpu_seconds"]),
        peak_rss_bytes=int(values["peak_rss_bytes"]),
        energy_joules=float(values["energy_joules"]),
        energy_source=str(values["energy_source"]),
        gpu_seconds=float(values["gpu_seconds"]),
    )


def window(
    minute: int, *, pid: int = 1, route: str = REC, version: str | None = "v1", **values: object
) -> UsageRow:
    start = DAY + timedelta(hours=11, minutes=minute)
    buckets = [0] * N_BUCKETS
    for index, count in dict(values.pop("buckets", {})).items():  # type: ignore[call-overload]
        buckets[index] = count
    fields: dict[str, object] = {
        "requests": 0,
        "errors": 0,
        "throttled": 0,
        "items": 0,
        "cpu_seconds": 0.0,
        "ram_gb_seconds": 0.0,
        "energy_joules": 100.0,
        "allocated_vcpu_seconds": 0.0,
        **values,
    }
    return UsageRow(
        window_start=start,
        window_end=start + timedelta(minutes=1),
        window_seconds=60.0,
        recorder_id=uuid.UUID(int=pid),
        host="api-1",
        pid=pid,
        route=route,
        model_version=version,
        latency_buckets=buckets,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def ledger(conn: psycopg.Connection) -> costs.Price:
    """A price (0.001 a CPU-s, 1e-4 a GiB-s, 0.01 a GPU-s), one run and some serving windows."""
    price = costs.add_price(
        conn,
        valid_from=datetime(2030, 1, 1, tzinfo=UTC),
        currency="USD",
        vcpu_hour=3.6,
        ram_gb_hour=0.36,
        gpu_hour=36,
        kwh=0.36,
        source="test",
    )
    conn.execute(
        "INSERT INTO training_runs (run_id, status, trigger, model_version) "
        "VALUES (%s, 'promoted', 'test', 'v1')",
        (RUN,),
    )
    ten = DAY + timedelta(hours=10)
    measurements = [
        phase("load", ten, wall_seconds=200, cpu_seconds=100, peak_rss_bytes=GIB,
              energy_joules=1000, energy_source="rapl", gpu_seconds=0),
        phase("fit", ten + timedelta(seconds=200), wall_seconds=1000, cpu_seconds=900,
              peak_rss_bytes=2 * GIB, energy_joules=5000, energy_source="estimate",
              gpu_seconds=10),
    ]  # fmt: skip
    host = HostInfo("trainer", "test cpu", 8, None)
    costs.record_training_phases(
        conn, run_id=RUN, model_version="v1", measurements=measurements, host=host
    )
    write_rows(
        conn,
        [
            window(0, pid=1, requests=400, cpu_seconds=10, allocated_vcpu_seconds=300,
                   buckets={2: 400}),
            window(0, pid=2, requests=600, cpu_seconds=20, allocated_vcpu_seconds=300,
                   buckets={3: 600}),
            window(1, requests=1000, cpu_seconds=30, allocated_vcpu_seconds=600,
                   buckets={2: 1000}),
            window(2, requests=1000, throttled=50, cpu_seconds=30, allocated_vcpu_seconds=600,
                   buckets={2: 1000}),
            window(13 * 60, route="/v1/events", version=None, requests=10, cpu_seconds=1,
                   allocated_vcpu_seconds=60, buckets={0: 10}),
        ],
    )  # fmt: skip
    return price


def rows(conn: psycopg.Connection, query: str, *params: object) -> list[dict[str, object]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def test_cost_training_runs(conn: psycopg.Connection, ledger: costs.Price) -> None:
    [run] = rows(conn, "SELECT * FROM cost_training_runs WHERE run_id = %s", RUN)
    assert run["model_version"] == "v1"
    assert run["status"] == "promoted"
    assert run["wall_seconds"] == 1200
    assert run["cpu_seconds"] == 1000
    assert run["peak_rss_bytes"] == 2 * GIB
    assert run["energy_joules"] == 6000
    assert run["energy_source"] == "estimate"  # the weakest of the phases'
    assert run["cost"] == pytest.approx(0.1 + 0.02 + 0.9 + 0.2 + 0.1)
    assert run["currency"] == "USD"


def test_cost_inference_daily(conn: psycopg.Connection, ledger: costs.Price) -> None:
    [day] = rows(conn, "SELECT * FROM cost_inference_daily WHERE model_version = 'v1'")
    assert day["day"] == date(2030, 1, 2)
    assert day["route"] == REC
    assert (day["requests"], day["errors"], day["throttled"]) == (3000, 0, 50)
    assert day["cpu_seconds"] == pytest.approx(90)
    assert day["used_cost"] == pytest.approx(0.09)
    assert day["allocated_cost"] == pytest.approx(1.8)
    assert day["p50_ms"] == pytest.approx(1.625)  # 2,400 in (1, 2] ms, 600 in (2, 3] ms
    assert day["p99_ms"] == pytest.approx(2.95)


def test_cost_daily(conn: psycopg.Connection, ledger: costs.Price) -> None:
    found = {
        (r["day"], r["path"]): r
        for r in rows(conn, "SELECT * FROM cost_daily WHERE day >= '2030-01-01'")
    }
    assert set(found) == {
        (date(2030, 1, 2), "training"),
        (date(2030, 1, 2), "inference"),
        (date(2030, 1, 3), "inference"),
    }
    training, serving = found[date(2030, 1, 2), "training"], found[date(2030, 1, 2), "inference"]
    assert training["cost"] == pytest.approx(1.32)
    assert training["cpu_seconds"] == 1000
    assert training["energy_joules"] == 6000
    assert serving["cost"] == pytest.approx(1.8)
    assert serving["used_cost"] == pytest.approx(0.09)
    assert serving["energy_joules"] == 400
    assert found[date(2030, 1, 3), "inference"]["cost"] == pytest.approx(0.06)


def test_cost_by_model_version_and_its_crossover(
    conn: psycopg.Connection, ledger: costs.Price
) -> None:
    [v1] = rows(conn, "SELECT * FROM cost_by_model_version WHERE model_version = 'v1'")
    assert v1["training_cost"] == pytest.approx(1.32)
    assert v1["inference_used_cost"] == pytest.approx(0.09)
    assert v1["inference_allocated_cost"] == pytest.approx(1.8)
    assert v1["requests"] == 3000
    assert v1["cost_per_1000_recommendations"] == pytest.approx(0.6)
    assert v1["amortized_cost_per_1000"] == pytest.approx(1.04)
    # cumulative allocated: 0.6 at 11:01, 1.2 at 11:02, 1.8 at 11:03 > 1.32
    assert v1["inference_overtook_training_at"] == DAY + timedelta(hours=11, minutes=3)


def test_no_crossover_while_serving_costs_less_than_training(
    conn: psycopg.Connection, ledger: costs.Price
) -> None:
    conn.execute(
        "DELETE FROM inference_usage WHERE window_start >= %s",
        (DAY + timedelta(hours=11, minutes=1),),
    )
    [v1] = rows(conn, "SELECT * FROM cost_by_model_version WHERE model_version = 'v1'")
    assert v1["inference_overtook_training_at"] is None


def test_any_period_can_be_repriced_with_another_version(
    conn: psycopg.Connection, ledger: costs.Price
) -> None:
    seed = costs.get_price(conn, 1)
    assert seed is not None
    expected = costs.phase_cost(
        seed, cpu_seconds=1000, ram_gb_seconds=200 + 2000, gpu_seconds=10, energy_joules=6000
    )
    [(repriced,)] = conn.execute(
        "SELECT sum(cost_of(cpu_seconds, ram_gb_seconds, gpu_seconds, energy_joules, 1)) "
        "FROM cost_training_phases WHERE run_id = %s",
        (RUN,),
    ).fetchall()
    assert repriced == pytest.approx(expected)
    day = date(2030, 1, 2)
    [v1] = [v for v in cost_queries.summary(conn, since=day, until=day) if v.model_version]
    assert v1.training_cost == pytest.approx(1.32)
    assert v1.cost_avoided_by_throttling == pytest.approx(50 * 0.09 / 3000)
    [again] = [
        v for v in cost_queries.summary(conn, since=day, until=day, price_id=1) if v.model_version
    ]
    assert again.training_cost == pytest.approx(expected)
    assert again.inference_used_cost == pytest.approx(90 * float(seed.vcpu_hour) / 3600)


def test_sql_and_python_agree_on_prices_and_quantiles(
    conn: psycopg.Connection, ledger: costs.Price
) -> None:
    [(bounds,)] = conn.execute("SELECT latency_bounds_ms()").fetchall()
    assert bounds == list(LATENCY_BOUNDS_MS)
    for phase_row in rows(conn, "SELECT * FROM cost_training_phases WHERE run_id = %s", RUN):
        assert phase_row["cost"] == pytest.approx(
            costs.phase_cost(
                ledger,
                cpu_seconds=phase_row["cpu_seconds"],  # type: ignore[arg-type]
                ram_gb_seconds=phase_row["ram_gb_seconds"],  # type: ignore[arg-type]
                gpu_seconds=phase_row["gpu_seconds"],  # type: ignore[arg-type]
            )
        )
    rng = random.Random(7)
    for _ in range(20):
        counts = [rng.choice([0, 0, rng.randrange(1, 500)]) for _ in range(N_BUCKETS)]
        for q in (0.5, 0.9, 0.99):
            [(sql,)] = conn.execute("SELECT latency_quantile_ms(%s, %s)", (q, counts)).fetchall()
            python = quantile_ms(counts, q)
            assert (sql is None and python is None) or sql == pytest.approx(python)


def test_daily_budgets_are_reported_and_a_crossing_is_logged_once(
    conn: psycopg.Connection, ledger: costs.Price, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(daily_budget_training=1.0, daily_budget_inference=5.0)
    day = date(2030, 1, 2)
    status = {s.path: s for s in cost_queries.budget_status(conn, day, settings)}
    assert status["training"].exceeded
    assert status["training"].cost == pytest.approx(1.32)
    assert not status["inference"].exceeded
    warned: set[tuple[date, str]] = set()
    for _ in range(2):
        cost_queries.warn_on_daily_budgets(conn, settings, day=day, already_warned=warned)
    assert caplog.text.count("daily training budget crossed on 2030-01-02") == 1


def test_the_analyst_role_reads_the_views_and_nothing_else(
    conn: psycopg.Connection, ledger: costs.Price
) -> None:
    conn.execute("SET LOCAL ROLE recsys_analyst")
    for view in ANALYST_VIEWS:
        conn.execute(f"SELECT * FROM {view}").fetchall()
    assert rows(conn, "SELECT cost FROM cost_training_runs WHERE run_id = %s", RUN)
    conn.execute("SELECT cost_of(3600, 0, 0, 0, 1)")
    hidden = ["events", "training_phase_usage", "inference_usage", "price_book", "training_runs"]
    if conn.execute("SELECT to_regclass('api_keys')").fetchone() != (None,):
        hidden.append("api_keys")
    for table in hidden:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(f"SELECT * FROM {table} LIMIT 1")
