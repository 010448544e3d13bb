"""Pure cost model: measured figures x a workload x a price -> daily cost; frontier; choice.

No I/O here: the sweep hands in what it measured and the price version it read, so the same
numbers can be re-priced for another workload without measuring again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

SECONDS_PER_DAY = 86_400.0
HOURS_PER_DAY = 24.0
GIB = 1024**3


@dataclass(frozen=True)
class Workload:
    """The operator's traffic and the capacity rules the cost model assumes.

    Capacity assumption: API processes are sized for the peak, not the mean. The peak rate
    is `peak_to_mean` x the daily mean, and a process of `vcpus_per_process` vCPUs is kept
    below `target_utilization` busy, so the processes needed are
    ceil(peak requests/s x CPU seconds per request / (vCPUs x utilisation)), never fewer than
    `api_processes` (the floor kept for redundancy). A cheaper-to-serve candidate therefore
    saves capacity only once traffic is high enough to need more than the floor.
    """

    requests_per_day: float
    retrains_per_day: float = 1.0
    active_users: int | None = None  # distinct users asking per day; None: every model user
    api_processes: int = 2
    vcpus_per_process: float = 1.0
    peak_to_mean: float = 3.0
    target_utilization: float = 0.6

    def __post_init__(self) -> None:
        if self.requests_per_day < 0 or self.retrains_per_day < 0:
            raise ValueError("requests_per_day and retrains_per_day must be >= 0")
        if self.api_processes < 1 or self.vcpus_per_process <= 0:
            raise ValueError("api_processes must be >= 1 and vcpus_per_process > 0")
        if self.peak_to_mean < 1 or not 0 < self.target_utilization <= 1:
            raise ValueError("peak_to_mean must be >= 1 and target_utilization in (0, 1]")
        if self.active_users is not None and self.active_users < 1:
            raise ValueError("active_users must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        return cls(**data)


@dataclass(frozen=True)
class Rates:
    """The two prices the model uses, per hour, from one price version."""

    vcpu_hour: float
    ram_gb_hour: float


@dataclass(frozen=True)
class Measured:
    """What one candidate cost and scored when measured (see measure.py)."""

    ndcg: float
    training_cost: float  # money per retrain, priced with the sweep's price version
    serving_cpu_per_1000: float  # process CPU seconds per 1,000 requests
    rss_growth_bytes: int  # what loading and serving the version added to one process


@dataclass(frozen=True)
class DailyCost:
    """A candidate's cost per day under a workload; `total` is the figure candidates compete on.

    `serving_used` is the CPU the requests burn; `capacity_idle` is the rest of the allocated
    vCPUs, paid for but idle. Allocated capacity includes the used CPU, so adding both in full
    would count the busy part twice: used + idle is what the allocated capacity costs, and
    `max(used, allocated)` when traffic outgrows the sizing rule.
    """

    training: float
    serving_used: float
    capacity_idle: float
    memory: float
    processes: int
    total: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def processes_needed(cpu_per_1000: float, workload: Workload) -> int:
    """API processes for the peak rate at the target utilisation, at least the floor."""
    peak_rps = workload.requests_per_day / SECONDS_PER_DAY * workload.peak_to_mean
    busy_vcpus = peak_rps * cpu_per_1000 / 1000.0
    per_process = workload.vcpus_per_process * workload.target_utilization
    return max(workload.api_processes, math.ceil(busy_vcpus / per_process - 1e-9))


def daily_cost(measured: Measured, workload: Workload, rates: Rates) -> DailyCost:
    """Training per retrain x retrains + serving CPU + idle capacity + memory, per day.

    Memory is each process's RSS growth (the touched pages of the memory-mapped artifact and
    what the recommender holds) for 24 h per process: capacity is sized per process.
    """
    training = measured.training_cost * workload.retrains_per_day
    used_cpu_seconds = measured.serving_cpu_per_1000 * workload.requests_per_day / 1000.0
    used = used_cpu_seconds / 3600.0 * rates.vcpu_hour
    processes = processes_needed(measured.serving_cpu_per_1000, workload)
    allocated = processes * workload.vcpus_per_process * HOURS_PER_DAY * rates.vcpu_hour
    idle = max(0.0, allocated - used)
    memory_gib = processes * max(0, measured.rss_growth_bytes) / GIB
    memory = memory_gib * HOURS_PER_DAY * rates.ram_gb_hour
    return DailyCost(training, used, idle, memory, processes, training + used + idle + memory)


@dataclass(frozen=True)
class Priced:
    """One measured candidate as the frontier and the choice see it."""

    candidate_id: int
    cost: float
    ndcg: float


def pareto_frontier(points: Sequence[Priced]) -> set[int]:
    """Ids no other candidate beats on both axes (cheaper or equal and at least as good).

    Sorted by cost (ties: best NDCG first), a point is on the frontier when it is better than
    everything cheaper.
    """
    frontier: set[int] = set()
    best = -math.inf
    for point in sorted(points, key=lambda p: (p.cost, -p.ndcg, p.candidate_id)):
        if point.ndcg > best:
            frontier.add(point.candidate_id)
            best = point.ndcg
    return frontier


@dataclass(frozen=True)
class Choice:
    """The cheapest candidate whose NDCG is at least floor x the best found, and its saving."""

    chosen: int | None
    best_ndcg: float
    threshold: float
    baseline: int | None
    saving: float | None  # baseline's daily cost - chosen's (positive: the choice is cheaper)
    saving_fraction: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose(points: Sequence[Priced], *, floor: float, baseline: int | None) -> Choice:
    """Pick the cheapest candidate meeting the quality floor (ties: better NDCG, then lower id).

    `floor` is a fraction of the best NDCG measured in this sweep, so it adapts to the shop's
    data; `baseline` (the settings in force) is what the saving is measured against.
    """
    if not 0 < floor <= 1:
        raise ValueError("floor must be in (0, 1]")
    if not points:
        return Choice(None, 0.0, 0.0, baseline, None, None)
    best = max(p.ndcg for p in points)
    threshold = best * floor
    eligible = [p for p in points if p.ndcg >= threshold - 1e-12]
    chosen = min(eligible, key=lambda p: (p.cost, -p.ndcg, p.candidate_id))
    base = next((p for p in points if p.candidate_id == baseline), None)
    if base is None:
        return Choice(chosen.candidate_id, best, threshold, baseline, None, None)
    saving = base.cost - chosen.cost
    fraction = saving / base.cost if base.cost > 0 else None
    return Choice(chosen.candidate_id, best, threshold, baseline, saving, fraction)
