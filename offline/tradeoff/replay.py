"""A realistic request mix and its replay through the real serving code, in-process.

The mix: known users drawn by activity (busy shoppers ask more often), some with events newer
than the model to fold in, some unknown users (cold start, half of them with a few events),
some requests filtered to one category, n = 10. CPU is process CPU (`time.process_time`), so
it counts what serving costs this process, not what other work on the machine costs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from shared.ranking.batching import RequestBatcher
from shared.ranking.recommender import RankedList, RecentEvent, Recommender
from shared.ranking.topk import top_k
from shared.serving_strategy import ServingStrategy

WARM_UP = 100  # requests answered untimed before a replay


@dataclass(frozen=True)
class Request:
    user_id: str
    category: str | None = None
    recent: tuple[RecentEvent, ...] = ()


@dataclass(frozen=True)
class Mix:
    """Shares of the request kinds; `requests` replayed per candidate."""

    requests: int = 2_000
    unknown_share: float = 0.1
    recent_share: float = 0.15  # of known users' requests
    category_share: float = 0.2
    n: int = 10
    seed: int = 0
    concurrency: int = 32  # concurrent asyncio tasks driving a batched strategy


@dataclass(frozen=True)
class Population:
    """Who and what the mix draws from (the model's own axes)."""

    user_ids: np.ndarray
    activity: np.ndarray  # events per user, the draw weight
    item_ids: np.ndarray
    item_weights: np.ndarray  # popularity, for recent events
    categories: tuple[str, ...]  # non-empty catalogue categories (may be empty)
    trained_until: float  # epoch s: recent events come after it


def request_mix(mix: Mix, population: Population, *, active_users: int | None) -> list[Request]:
    """`mix.requests` requests, deterministic for a seed."""
    rng = np.random.default_rng(mix.seed)
    users = _active(population, active_users, rng)
    weights = population.activity[users].astype(np.float64) + 1e-9
    known = rng.choice(users, size=mix.requests, p=weights / weights.sum())
    item_p = population.item_weights.astype(np.float64) + 1e-9
    item_p /= item_p.sum()
    requests = []
    for i in range(mix.requests):
        draw = rng.random(3)
        category = None
        if population.categories and draw[2] < mix.category_share:
            category = population.categories[int(rng.integers(len(population.categories)))]
        if draw[0] < mix.unknown_share:
            recent = _recent(population, item_p, rng) if draw[1] < 0.5 else ()
            requests.append(Request(f"tradeoff-unknown-{i}", category, recent))
            continue
        recent = _recent(population, item_p, rng) if draw[1] < mix.recent_share else ()
        requests.append(Request(str(population.user_ids[known[i]]), category, recent))
    return requests


def _active(population: Population, active_users: int | None, rng: np.random.Generator) -> Any:
    """Rows of the users who ask today: all, or `active_users` of them drawn by activity."""
    rows = np.flatnonzero(population.activity > 0)
    if active_users is None or active_users >= len(rows):
        return rows
    p = population.activity[rows].astype(np.float64)
    return np.sort(rng.choice(rows, size=active_users, replace=False, p=p / p.sum()))


def _recent(
    population: Population, item_p: np.ndarray, rng: np.random.Generator
) -> tuple[RecentEvent, ...]:
    count = int(rng.integers(1, 4))
    items = rng.choice(len(population.item_ids), size=count, p=item_p)
    types = rng.choice(["view", "click", "add_to_cart"], size=count, p=[0.7, 0.2, 0.1])
    return tuple(
        RecentEvent(
            str(population.item_ids[item]), str(kind), None, population.trained_until + 60 * (j + 1)
        )
        for j, (item, kind) in enumerate(zip(items, types, strict=True))
    )


@dataclass
class ReplayResult:
    """What a replay cost: process CPU, wall time, each request's latency, and the answers."""

    cpu_seconds: float
    wall_seconds: float
    latencies_ms: np.ndarray
    answers: list[RankedList] = field(repr=False)

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_seconds / max(len(self.answers), 1) * 1000.0

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else 0.0


def replay(recommender: Recommender, requests: list[Request], *, n: int) -> ReplayResult:
    """One request after another, as one API process answers them.

    A short untimed warm-up first: an API process answers millions of requests per version,
    so first-touch page faults of the memory-mapped arrays are not a per-request cost.
    """
    for request in requests[:WARM_UP]:
        recommender.recommend(
            request.user_id, n=n, category=request.category, recent=request.recent
        )
    answers: list[RankedList] = []
    latencies = np.empty(len(requests), dtype=np.float64)
    cpu, wall = time.process_time(), time.perf_counter()
    for i, request in enumerate(requests):
        started = time.perf_counter()
        answers.append(
            recommender.recommend(
                request.user_id, n=n, category=request.category, recent=request.recent
            )
        )
        latencies[i] = (time.perf_counter() - started) * 1000.0
    return ReplayResult(time.process_time() - cpu, time.perf_counter() - wall, latencies, answers)


def replay_batched(
    recommender: Recommender,
    requests: list[Request],
    *,
    n: int,
    strategy: ServingStrategy,
    concurrency: int,
) -> ReplayResult:
    """Drive the API's RequestBatcher with `concurrency` concurrent asyncio tasks."""
    warm_up = RequestBatcher.for_strategy(strategy, recommender)
    asyncio.run(_drive(warm_up, requests[:WARM_UP], n=n, concurrency=concurrency))
    batcher = RequestBatcher.for_strategy(strategy, recommender)
    return asyncio.run(_drive(batcher, requests, n=n, concurrency=concurrency))


async def _drive(
    batcher: Any, requests: list[Request], *, n: int, concurrency: int
) -> ReplayResult:
    answers: list[Any] = [None] * len(requests)
    latencies = np.empty(len(requests), dtype=np.float64)
    cursor = iter(range(len(requests)))

    async def client() -> None:
        for i in cursor:
            request = requests[i]
            started = time.perf_counter()
            answers[i] = await batcher.recommend(
                request.user_id, n=n, category=request.category, recent=request.recent
            )
            latencies[i] = (time.perf_counter() - started) * 1000.0

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    await batcher.aclose()
    return ReplayResult(time.process_time() - cpu, time.perf_counter() - wall, latencies, answers)


def recall_against_exact(
    requests: list[Request],
    answers: list[RankedList],
    *,
    user_ids: np.ndarray,
    user_factors: np.ndarray,
    item_ids: np.ndarray,
    item_factors: np.ndarray,
    seen: sp.csr_matrix,
) -> float | None:
    """Mean overlap of the model part of each plain known-user answer with exact top-k.

    Only requests without a filter or recent events, answered from the trained vector, are
    compared (the others have no exact list to compare with); each answer's model part
    (before any popular fill) is compared with the same number of exact best items.
    """
    row_of = {str(u): i for i, u in enumerate(user_ids)}
    pairs = [
        (row_of[r.user_id], a)
        for r, a in zip(requests, answers, strict=True)
        if r.category is None and not r.recent and a.source == "model" and r.user_id in row_of
    ]
    pairs = [(row, a) for row, a in pairs if len(a.item_ids) > a.filled_from_popular]
    if not pairs:
        return None
    rows = np.array([row for row, _ in pairs], dtype=np.int64)
    width = max(len(a.item_ids) - a.filled_from_popular for _, a in pairs)
    exact, _ = top_k(user_factors, item_factors, rows, k=width, exclude=seen)
    overlaps = []
    for (_, answer), best in zip(pairs, exact, strict=True):
        m = len(answer.item_ids) - answer.filled_from_popular
        truth = {str(item_ids[i]) for i in best[:m] if i >= 0}
        overlaps.append(len(truth & set(answer.item_ids[:m])) / max(len(truth), 1))
    return float(np.mean(overlaps))
