"""Pricing quantities with a price version, and a run's cost ceiling (no database)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from shared.cost_report import crossover
from shared.costs import (
    OverBudget,
    Price,
    RunBudget,
    measurement_cost,
    phase_cost,
    ram_gb_seconds,
)
from shared.metering import GIB, EnergyModel, Meter, PhaseMeasurement

T0 = datetime(2030, 1, 2, tzinfo=UTC)


def price(**changes: object) -> Price:
    fields: dict[str, object] = {
        "price_id": 1,
        "valid_from": T0,
        "currency": "USD",
        "vcpu_hour": Decimal("3.6"),  # 0.001 a CPU-second
        "ram_gb_hour": Decimal("0.36"),  # 0.0001 a GiB-second
        "gpu_hour": Decimal("36"),  # 0.01 a GPU-second
        "kwh": Decimal("0.36"),  # 1e-7 a joule
        "energy_billed": False,
        "source": "test",
        "note": "",
    }
    fields.update(changes)
    return Price(**fields)  # type: ignore[arg-type]


def measurement(**changes: object) -> PhaseMeasurement:
    fields: dict[str, object] = {
        "phase": "fit",
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=1000),
        "wall_seconds": 1000.0,
        "cpu_seconds": 900.0,
        "peak_rss_bytes": 2 * GIB,
        "energy_joules": 5000.0,
        "energy_source": "estimate",
        "gpu_seconds": 10.0,
    }
    fields.update(changes)
    return PhaseMeasurement(**fields)  # type: ignore[arg-type]


def test_cost_is_cpu_plus_memory_held_plus_gpu_time() -> None:
    cost = phase_cost(price(), cpu_seconds=900, ram_gb_seconds=2000, gpu_seconds=10)
    assert cost == pytest.approx(0.9 + 0.2 + 0.1)


def test_energy_is_reported_but_only_billed_when_the_price_says_so() -> None:
    cloud = phase_cost(price(), cpu_seconds=0, ram_gb_seconds=0, energy_joules=3.6e6)
    on_premises = phase_cost(
        price(energy_billed=True), cpu_seconds=0, ram_gb_seconds=0, energy_joules=3.6e6
    )
    assert cloud == 0.0
    assert on_premises == pytest.approx(0.36)  # one kWh


def test_a_phase_is_priced_from_its_measurement() -> None:
    m = measurement()
    assert ram_gb_seconds(m.peak_rss_bytes, m.wall_seconds) == pytest.approx(2000.0)
    assert measurement_cost(price(), m) == pytest.approx(1.2)


def test_the_budget_counts_finished_phases() -> None:
    budget = RunBudget(price(), ceiling=2.0, energy=EnergyModel())
    done = [measurement(), measurement()]
    assert budget.cost_so_far(done) == pytest.approx(2.4)
    with pytest.raises(
        OverBudget, match=r"metered cost 2\.4 USD passed the ceiling of 2 USD; stopped at"
    ):
        budget.check(done)
    budget.check(done[:1])


def test_the_budget_counts_the_running_phase_so_far(tmp_path: Path) -> None:
    meter = Meter(energy=EnergyModel(), rapl_root=tmp_path / "none")
    expensive = price(vcpu_hour=Decimal("3600000"))  # 1000 a CPU-second
    budget = RunBudget(expensive, ceiling=50.0, energy=meter.energy)
    with meter.measure("fit") as running:
        budget.check([], running)  # almost no CPU yet
        start = time.process_time()
        while time.process_time() - start < 0.1:
            sum(range(1000))
        assert budget.cost_so_far([], running) > 100.0
        with pytest.raises(OverBudget):
            budget.check([], running)
    assert budget.cost_so_far([], running) == 0.0  # finished: it counts through `done` now


def test_crossover_is_where_cumulative_serving_first_passes_training() -> None:
    times = [T0 + timedelta(hours=h) for h in range(4)]
    training = [0.0, 1.0, 1.0, 1.0]
    serving = [0.0, 0.5, 1.5, 2.5]
    marker = crossover(times, training, serving)
    assert marker is not None
    assert marker.at == T0 + timedelta(hours=1, minutes=30)
    assert marker.value == pytest.approx(1.0)
    assert crossover(times, training, [0.0, 0.1, 0.2, 0.3]) is None
