"""Prices and the training side of the cost ledger: price versions, pricing, phase records.

The database keeps raw quantities and computes money in views (migration 0004); `phase_cost`
here is the same formula as the SQL function `priced`, for what must be priced before a row
exists (a run's budget, checked while it trains).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg
from psycopg.rows import class_row

from shared.hardware import HostInfo
from shared.metering import GIB, EnergyModel, PhaseMeasurement, PhaseProgress
from shared.settings import Settings

log = logging.getLogger(__name__)
SECONDS_PER_HOUR = 3600.0
JOULES_PER_KWH = 3.6e6
_PRICE_COLUMNS = (
    "price_id, valid_from, currency, vcpu_hour, ram_gb_hour, gpu_hour, kwh, energy_billed, "
    "source, note"
)
_PHASE_COLUMNS = (
    "run_id",
    "seq",
    "phase",
    "model_version",
    "task_id",
    "host",
    "cpu_model",
    "cpu_count",
    "gpu_name",
    "started_at",
    "finished_at",
    "wall_seconds",
    "cpu_seconds",
    "peak_rss_bytes",
    "gpu_seconds",
    "energy_joules",
    "energy_source",
)


@dataclass(frozen=True)
class Price:
    """One price version: per vCPU-hour, GiB-hour of memory, GPU-hour and kWh, from valid_from.

    energy_billed: whether energy is charged on top (on-premises); a cloud VM price includes
    its power, so by default energy is reported but not added.
    """

    price_id: int
    valid_from: datetime
    currency: str
    vcpu_hour: Decimal
    ram_gb_hour: Decimal
    gpu_hour: Decimal
    kwh: Decimal
    energy_billed: bool
    source: str
    note: str


def energy_model(settings: Settings) -> EnergyModel:
    """The watts used to estimate energy where no counter is readable, from settings."""
    return EnergyModel(
        watts_per_core=settings.energy_watts_per_core, watts_per_gb=settings.energy_watts_per_gb
    )


def ram_gb_seconds(peak_rss_bytes: int, wall_seconds: float) -> float:
    """Memory held, as GiB x seconds (the peak held for the whole wall time)."""
    return peak_rss_bytes / GIB * wall_seconds


def phase_cost(
    price: Price,
    *,
    cpu_seconds: float,
    ram_gb_seconds: float,
    gpu_seconds: float = 0.0,
    energy_joules: float = 0.0,
) -> float:
    """Money for these quantities under `price` (the SQL function `priced`, in Python)."""
    cost = (
        cpu_seconds / SECONDS_PER_HOUR * float(price.vcpu_hour)
        + ram_gb_seconds / SECONDS_PER_HOUR * float(price.ram_gb_hour)
        + gpu_seconds / SECONDS_PER_HOUR * float(price.gpu_hour)
    )
    if price.energy_billed:
        cost += energy_joules / JOULES_PER_KWH * float(price.kwh)
    return cost


def measurement_cost(price: Price, measurement: PhaseMeasurement) -> float:
    """Money one finished phase cost."""
    return phase_cost(
        price,
        cpu_seconds=measurement.cpu_seconds,
        ram_gb_seconds=ram_gb_seconds(measurement.peak_rss_bytes, measurement.wall_seconds),
        gpu_seconds=measurement.gpu_seconds,
        energy_joules=measurement.energy_joules,
    )


# --- price versions -----------------------------------------------------------------------


def add_price(
    conn: psycopg.Connection,
    *,
    valid_from: datetime,
    currency: str,
    vcpu_hour: float,
    ram_gb_hour: float,
    gpu_hour: float,
    kwh: float,
    source: str,
    note: str = "",
    energy_billed: bool = False,
) -> Price:
    """Add a price version; it applies to usage from valid_from until a later version."""
    with conn.cursor(row_factory=class_row(Price)) as cur:
        row = cur.execute(
            "INSERT INTO price_book (valid_from, currency, vcpu_hour, ram_gb_hour, gpu_hour, "
            "kwh, energy_billed, source, note) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            f"RETURNING {_PRICE_COLUMNS}",
            (
                valid_from,
                currency,
                Decimal(str(vcpu_hour)),
                Decimal(str(ram_gb_hour)),
                Decimal(str(gpu_hour)),
                Decimal(str(kwh)),
                energy_billed,
                source,
                note,
            ),
        ).fetchone()
    assert row is not None
    return row


def list_prices(conn: psycopg.Connection) -> list[Price]:
    """Every price version, oldest first."""
    with conn.cursor(row_factory=class_row(Price)) as cur:
        return cur.execute(
            f"SELECT {_PRICE_COLUMNS} FROM price_book ORDER BY valid_from, price_id"
        ).fetchall()


def get_price(conn: psycopg.Connection, price_id: int) -> Price | None:
    """One price version by id."""
    with conn.cursor(row_factory=class_row(Price)) as cur:
        return cur.execute(
            f"SELECT {_PRICE_COLUMNS} FROM price_book WHERE price_id = %s", (price_id,)
        ).fetchone()


def price_in_force(conn: psycopg.Connection, at: datetime | None = None) -> Price | None:
    """The version that prices usage at `at` (default now), as the views choose it."""
    with conn.cursor(row_factory=class_row(Price)) as cur:
        return cur.execute(
            f"SELECT {_PRICE_COLUMNS} FROM price_book WHERE valid_from <= coalesce(%s, now()) "
            "ORDER BY valid_from DESC, price_id DESC LIMIT 1",
            (at,),
        ).fetchone()


# --- training phases ------------------------------------------------------------------------


def record_training_phases(
    conn: psycopg.Connection,
    *,
    run_id: uuid.UUID,
    model_version: str | None,
    measurements: Sequence[PhaseMeasurement],
    host: HostInfo,
    task_id: str | None = None,
) -> int:
    """Write a run's measured phases in one multi-row INSERT; returns how many were written.

    Idempotent per (run, position): recording the same run twice adds nothing.
    """
    if not measurements:
        return 0
    rows = [
        _phase_row(run_id, seq, m, model_version=model_version, task_id=task_id, host=host)
        for seq, m in enumerate(measurements)
    ]
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(_PHASE_COLUMNS)) + ")"] * len(rows))
    cursor = conn.execute(
        f"INSERT INTO training_phase_usage ({', '.join(_PHASE_COLUMNS)}) VALUES {placeholders} "
        "ON CONFLICT (run_id, seq) DO NOTHING",
        [value for row in rows for value in row],
    )
    return cursor.rowcount


def _phase_row(
    run_id: uuid.UUID,
    seq: int,
    m: PhaseMeasurement,
    *,
    model_version: str | None,
    task_id: str | None,
    host: HostInfo,
) -> tuple[object, ...]:
    return (
        run_id,
        seq,
        m.phase,
        model_version,
        task_id,
        host.hostname,
        host.cpu_model,
        host.cpu_count,
        host.gpu_name,
        m.started_at,
        m.finished_at,
        m.wall_seconds,
        m.cpu_seconds,
        m.peak_rss_bytes,
        m.gpu_seconds,
        m.energy_joules,
        m.energy_source,
    )


# --- a run's budget -----------------------------------------------------------------------


class OverBudget(RuntimeError):
    """A run's metered cost passed its ceiling; raised at a phase or iteration boundary."""

    def __init__(self, cost: float, ceiling: float, currency: str, *, at: str) -> None:
        super().__init__(
            f"metered cost {cost:.6g} {currency} passed the ceiling of {ceiling:.6g} "
            f"{currency}; stopped at {at}"
        )
        self.cost = cost
        self.ceiling = ceiling


@dataclass(frozen=True)
class RunBudget:
    """A cost ceiling for one run, priced with the version in force when the run started."""

    price: Price
    ceiling: float
    energy: EnergyModel

    def cost_so_far(
        self, done: Sequence[PhaseMeasurement], running: PhaseProgress | None = None
    ) -> float:
        """Finished phases plus the running one's CPU, memory and (estimated) energy so far."""
        cost = sum(measurement_cost(self.price, m) for m in done)
        if running is not None and running.measurement is None:
            cpu, wall = running.cpu_seconds_so_far, running.wall_seconds_so_far
            peak = running.peak_rss_bytes
            cost += phase_cost(
                self.price,
                cpu_seconds=cpu,
                ram_gb_seconds=ram_gb_seconds(peak, wall),
                energy_joules=self.energy.estimate(
                    cpu_seconds=cpu, peak_rss_bytes=peak, wall_seconds=wall
                ),
            )
        return cost

    def check(
        self,
        done: Sequence[PhaseMeasurement],
        running: PhaseProgress | None = None,
        *,
        at: str = "a phase boundary",
    ) -> None:
        """Raise OverBudget once the cost so far passes the ceiling; `at` says where we are."""
        cost = self.cost_so_far(done, running)
        if cost > self.ceiling:
            raise OverBudget(cost, self.ceiling, self.price.currency, at=at)
