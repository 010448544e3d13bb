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


PROCESS_SIZES = (0.25, 0.5, 1.0)  # vCPUs per API process the lab compares by default


@dataclass(frozen=True)
class Workload:
    """The operator's traffic and the capacity rules the cost model assumes.

    Capacity assumption: API processes are sized for the peak, not the mean. The peak rate
    is `peak_to_mean` x the daily mean, and a process of v vCPUs is kept below
    `target_utilization` busy, so the processes needed are
    ceil(peak requests/s x CPU seconds per request / (v x utilisation)), never fewer than
    `api_processes` (the floor kept for redundancy). A cheaper-to-serve candidate therefore
    saves capacity only once traffic is high enough to need more than the floor.

    Process size: with `vcpus_per_process` unset, each candidate is priced at every size of
    `process_sizes` and the cheapest is its cost (all sizes are kept, so a small shop sees
    what two 0.25-vCPU processes cost next to two of 1 vCPU). A fractional vCPU is a CPU
    quota: a CPU-bound request can take up to 1 / v times its measured time, so a size is
    only eligible when the measured p99 stretched by 1 / v stays within `max_p99_ms`
    (when none is, the largest size is used and the sizing says so).
    """

    requests_per_day: float
    retrains_per_day: float = 1.0
    active_users: int | None = None  # distinct users asking per day; None: every model user
    api_processes: int = 2
    vcpus_per_process: float | None = None  # None: the cheapest eligible of process_sizes
    peak_to_mean: float = 3.0
    target_utilization: float = 0.6
    process_sizes: tuple[float, ...] = PROCESS_SIZES
    max_p99_ms: float = 50.0

    def __post_init__(self) -> None:
        if self.requests_per_day < 0 or self.retrains_per_day < 0:
            raise ValueError("requests_per_day and retrains_per_day must be >= 0")
        if self.api_processes < 1:
            raise ValueError("api_processes must be >= 1")
        if self.vcpus_per_process is not None and self.vcpus_per_process <= 0:
            raise ValueError("vcpus_per_process must be > 0 (or unset: the lab compares sizes)")
        if not self.process_sizes or any(size <= 0 for size in self.process_sizes):
            raise ValueError("process_sizes must be one or more vCPU counts > 0")
        if self.peak_to_mean < 1 or not 0 < self.target_utilization <= 1:
            raise ValueError("peak_to_mean must be >= 1 and target_utilization in (0, 1]")
        if self.active_users is not None and self.active_users < 1:
            raise ValueError("active_users must be >= 1")
        if self.max_p99_ms <= 0:
            raise ValueError("max_p99_ms must be > 0")

    @property
    def sizes(self) -> tuple[float, ...]:
        """The process sizes priced: the fixed one, or every one of process_sizes."""
        if self.vcpus_per_process is not None:
            return (self.vcpus_per_process,)
        return tuple(sorted(set(self.process_sizes)))

    def to_dict(self) -> dict[str, Any]:
        plain = asdict(self)
        plain["process_sizes"] = list(self.process_sizes)
        return plain

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        known = {**data}
        if "process_sizes" in known:
            known["process_sizes"] = tuple(known["process_sizes"])
        return cls(**known)


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
    p99_ms: float = 0.0  # measured at a full vCPU; stretched by 1 / size for smaller sizes
    process_rss_bytes: int = 0  # an API process before any version (0: not measured)


@dataclass(frozen=True)
class Sizing:
    """One process size priced: how many processes, what they cost a day, whether eligible."""

    vcpus_per_process: float
    processes: int
    capacity_idle: float
    memory: float
    total: float
    p99_ms: float  # the measured p99 stretched by 1 / size
    eligible: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DailyCost:
    """A candidate's cost per day under a workload; `total` is the figure candidates compete on.

    `serving_used` is the CPU the requests burn; `capacity_idle` is the rest of the allocated
    vCPUs, paid for but idle. Allocated capacity includes the used CPU, so adding both in full
    would count the busy part twice: used + idle is what the allocated capacity costs, and
    `max(used, allocated)` when traffic outgrows the sizing rule. The figures are those of the
    cheapest eligible size (`vcpus_per_process`); `sizings` holds every size priced.
    """

    training: float
    serving_used: float
    capacity_idle: float
    memory: float
    processes: int
    total: float
    vcpus_per_process: float = 1.0
    sizings: tuple[Sizing, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def processes_needed(cpu_per_1000: float, workload: Workload, vcpus: float | None = None) -> int:
    """API processes of `vcpus` (default: the workload's largest size) for the peak rate at
    the target utilisation, at least the floor."""
    size = vcpus if vcpus is not None else max(workload.sizes)
    peak_rps = workload.requests_per_day / SECONDS_PER_DAY * workload.peak_to_mean
    busy_vcpus = peak_rps * cpu_per_1000 / 1000.0
    per_process = size * workload.target_utilization
    return max(workload.api_processes, math.ceil(busy_vcpus / per_process - 1e-9))


def daily_cost(measured: Measured, workload: Workload, rates: Rates) -> DailyCost:
    """Training per retrain x retrains + serving CPU + idle capacity + memory, per day, at
    the cheapest eligible process size (Workload's docstring).

    Memory is, per process, its base RSS (when measured) plus the version's RSS growth (the
    touched pages of the memory-mapped artifact and what the recommender holds), for 24 h:
    capacity is sized per process, so more, smaller processes hold more copies.
    """
    training = measured.training_cost * workload.retrains_per_day
    used_cpu_seconds = measured.serving_cpu_per_1000 * workload.requests_per_day / 1000.0
    used = used_cpu_seconds / 3600.0 * rates.vcpu_hour
    sizings = tuple(_sizing(measured, workload, rates, size, used) for size in workload.sizes)
    eligible = [s for s in sizings if s.eligible] or [sizings[-1]]
    best = min(eligible, key=lambda s: (s.total, -s.vcpus_per_process))
    return DailyCost(
        training,
        used,
        best.capacity_idle,
        best.memory,
        best.processes,
        training + used + best.capacity_idle + best.memory,
        best.vcpus_per_process,
        sizings,
    )


def _sizing(
    measured: Measured, workload: Workload, rates: Rates, size: float, used: float
) -> Sizing:
    processes = processes_needed(measured.serving_cpu_per_1000, workload, size)
    allocated = processes * size * HOURS_PER_DAY * rates.vcpu_hour
    idle = max(0.0, allocated - used)
    per_process = max(0, measured.process_rss_bytes) + max(0, measured.rss_growth_bytes)
    memory = processes * per_process / GIB * HOURS_PER_DAY * rates.ram_gb_hour
    stretched = measured.p99_ms / min(size, 1.0)
    eligible = workload.vcpus_per_process is not None or stretched <= workload.max_p99_ms
    return Sizing(size, processes, idle, memory, used + idle + memory, stretched, eligible)


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
