"""The tradeoff lab's cost model, frontier and choice on hand-built numbers."""

from __future__ import annotations

import math

import pytest

from offline.tradeoff.costing import (
    GIB,
    Measured,
    Priced,
    Rates,
    Workload,
    choose,
    daily_cost,
    pareto_frontier,
    processes_needed,
)

RATES = Rates(vcpu_hour=0.04, ram_gb_hour=0.005)


def test_daily_cost_adds_training_serving_idle_capacity_and_memory() -> None:
    workload = Workload(
        requests_per_day=864_000, retrains_per_day=2, api_processes=2, vcpus_per_process=1.0
    )
    # 10 requests/s mean, 30/s peak; 2 CPU s per 1,000 -> 0.06 busy vCPU at peak: the floor rules
    measured = Measured(
        ndcg=0.1, training_cost=0.5, serving_cpu_per_1000=2.0, rss_growth_bytes=GIB // 2
    )
    cost = daily_cost(measured, workload, RATES)
    used = 864_000 / 1000 * 2.0 / 3600 * 0.04  # 1,728 CPU s
    allocated = 2 * 1.0 * 24 * 0.04
    assert cost.processes == 2
    assert cost.training == pytest.approx(1.0)
    assert cost.serving_used == pytest.approx(used)
    assert cost.capacity_idle == pytest.approx(allocated - used)
    assert cost.memory == pytest.approx(2 * 0.5 * 24 * 0.005)
    assert cost.total == pytest.approx(1.0 + allocated + cost.memory)


def test_processes_follow_the_peak_once_traffic_outgrows_the_floor() -> None:
    workload = Workload(requests_per_day=86_400_000, peak_to_mean=3.0, target_utilization=0.5)
    # 1,000 requests/s mean, 3,000 at peak; 2 ms CPU each -> 6 busy vCPUs -> 12 at 50 %
    assert processes_needed(2.0, workload) == 12
    assert processes_needed(0.0, workload) == workload.api_processes


def test_a_small_shop_is_priced_at_the_cheapest_process_size_and_sees_every_size() -> None:
    workload = Workload(requests_per_day=864_000, api_processes=2)  # sizes 0.25, 0.5, 1
    measured = Measured(0.1, 0.0, 2.0, 0, p99_ms=2.0, process_rss_bytes=GIB // 10)
    cost = daily_cost(measured, workload, RATES)
    assert [s.vcpus_per_process for s in cost.sizings] == [0.25, 0.5, 1.0]
    assert (cost.vcpus_per_process, cost.processes) == (0.25, 2)  # 0.06 busy vCPU at peak
    quarter, _, whole = cost.sizings
    assert quarter.total < whole.total
    assert whole.capacity_idle == pytest.approx(2 * 24 * 0.04 - cost.serving_used)
    assert quarter.capacity_idle == pytest.approx(2 * 0.25 * 24 * 0.04 - cost.serving_used)
    assert quarter.p99_ms == pytest.approx(8.0)  # the CPU quota stretches a request 4x
    assert cost.memory == pytest.approx(2 * 0.1 * 24 * 0.005)  # each process's own RSS


def test_a_size_that_would_stretch_p99_past_the_limit_is_not_chosen() -> None:
    workload = Workload(requests_per_day=864_000, max_p99_ms=10.0)
    slow = Measured(0.1, 0.0, 2.0, 0, p99_ms=4.0)  # 16 ms at 0.25 vCPU, 8 ms at 0.5
    cost = daily_cost(slow, workload, RATES)
    assert [s.eligible for s in cost.sizings] == [False, True, True]
    assert cost.vcpus_per_process == 0.5
    hopeless = Measured(0.1, 0.0, 2.0, 0, p99_ms=40.0)  # no size qualifies: the largest
    assert daily_cost(hopeless, workload, RATES).vcpus_per_process == 1.0


def test_more_smaller_processes_follow_the_peak() -> None:
    workload = Workload(requests_per_day=86_400_000, target_utilization=0.5)
    # 3,000 requests/s at peak x 2 ms = 6 busy vCPUs -> 12 vCPUs at 50 %
    assert processes_needed(2.0, workload, 0.5) == 24
    assert processes_needed(2.0, workload, 1.0) == 12
    fixed = Workload(requests_per_day=1, vcpus_per_process=2.0)
    assert fixed.sizes == (2.0,)
    assert Workload.from_dict(fixed.to_dict()) == fixed


def test_used_cpu_beyond_allocation_is_not_negative_idle() -> None:
    workload = Workload(requests_per_day=1e9, api_processes=1, target_utilization=1.0)
    cost = daily_cost(Measured(0.1, 0.0, 5.0, 0), workload, RATES)
    assert cost.capacity_idle >= 0
    assert cost.total >= cost.serving_used


def test_cheaper_serving_wins_at_high_traffic_and_cheaper_training_at_low() -> None:
    heavy_training = Measured(
        ndcg=0.1, training_cost=5.0, serving_cpu_per_1000=0.2, rss_growth_bytes=0
    )
    heavy_serving = Measured(
        ndcg=0.1, training_cost=0.1, serving_cpu_per_1000=5.0, rss_growth_bytes=0
    )
    low = Workload(requests_per_day=10_000, api_processes=1)
    high = Workload(requests_per_day=500_000_000, api_processes=1)
    assert (
        daily_cost(heavy_serving, low, RATES).total < daily_cost(heavy_training, low, RATES).total
    )
    assert (
        daily_cost(heavy_training, high, RATES).total < daily_cost(heavy_serving, high, RATES).total
    )


def test_workload_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="requests_per_day"):
        Workload(requests_per_day=-1)
    with pytest.raises(ValueError, match="api_processes"):
        Workload(requests_per_day=1, api_processes=0)
    with pytest.raises(ValueError, match="target_utilization"):
        Workload(requests_per_day=1, target_utilization=0)
    with pytest.raises(ValueError, match="process_sizes"):
        Workload(requests_per_day=1, process_sizes=())
    with pytest.raises(ValueError, match="vcpus_per_process"):
        Workload(requests_per_day=1, vcpus_per_process=0)
    assert Workload.from_dict(Workload(5, active_users=3).to_dict()) == Workload(5, active_users=3)


POINTS = [
    Priced(0, cost=10.0, ndcg=0.100),  # baseline
    Priced(1, cost=4.0, ndcg=0.098),  # cheap and nearly as good
    Priced(2, cost=2.0, ndcg=0.050),  # cheapest, poor
    Priced(3, cost=12.0, ndcg=0.101),  # best, dearest
    Priced(4, cost=11.0, ndcg=0.090),  # dominated by 0
    Priced(5, cost=4.0, ndcg=0.097),  # same cost as 1, worse: dominated
]


def test_frontier_keeps_only_undominated_points() -> None:
    assert pareto_frontier(POINTS) == {0, 1, 2, 3}
    assert pareto_frontier([]) == set()


def test_choice_is_the_cheapest_above_the_floor_with_its_saving() -> None:
    choice = choose(POINTS, floor=0.97, baseline=0)
    assert choice.best_ndcg == pytest.approx(0.101)
    assert choice.threshold == pytest.approx(0.101 * 0.97)
    assert choice.chosen == 1
    assert choice.saving == pytest.approx(6.0)
    assert choice.saving_fraction == pytest.approx(0.6)


def test_a_strict_floor_picks_the_best_and_a_loose_one_the_cheapest() -> None:
    assert choose(POINTS, floor=1.0, baseline=0).chosen == 3
    assert choose(POINTS, floor=0.4, baseline=0).chosen == 2
    strict = choose(POINTS, floor=1.0, baseline=0)
    assert strict.saving is not None
    assert strict.saving < 0


def test_choice_without_points_or_baseline() -> None:
    empty = choose([], floor=0.9, baseline=None)
    assert empty.chosen is None
    assert empty.saving is None
    alone = choose(POINTS[:2], floor=0.9, baseline=None)
    assert alone.chosen == 1
    assert alone.saving is None
    with pytest.raises(ValueError, match="floor"):
        choose(POINTS, floor=0.0, baseline=0)
    assert not math.isnan(alone.best_ndcg)
