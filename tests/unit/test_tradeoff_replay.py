"""The request mix: shares, determinism, activity weighting, recent events after the model."""

from __future__ import annotations

from collections import Counter

import numpy as np

from offline.tradeoff.replay import Mix, Population, request_mix

POPULATION = Population(
    user_ids=np.array([f"u{i}" for i in range(50)]),
    activity=np.array([100] + [1] * 48 + [0]),  # u0 very active, u49 has no events
    item_ids=np.array([f"i{i}" for i in range(20)]),
    item_weights=np.arange(20, dtype=np.float32),
    categories=("a", "b"),
    trained_until=1_000.0,
)


def test_the_mix_has_its_shares_and_is_deterministic() -> None:
    mix = Mix(requests=4_000, unknown_share=0.1, recent_share=0.2, category_share=0.25, seed=1)
    requests = request_mix(mix, POPULATION, active_users=None)
    assert requests == request_mix(mix, POPULATION, active_users=None)
    assert len(requests) == 4_000
    unknown = [r for r in requests if r.user_id.startswith("tradeoff-unknown")]
    assert 0.08 < len(unknown) / 4_000 < 0.12
    assert 0.22 < sum(r.category is not None for r in requests) / 4_000 < 0.28
    known_recent = [r for r in requests if r.recent and r not in unknown]
    assert 0.15 < len(known_recent) / (4_000 - len(unknown)) < 0.25
    assert all(e.occurred_at > POPULATION.trained_until for r in requests for e in r.recent)
    assert {r.category for r in requests} <= {None, "a", "b"}


def test_busy_users_ask_more_and_inactive_ones_never() -> None:
    requests = request_mix(Mix(requests=2_000, unknown_share=0.0), POPULATION, active_users=None)
    counts = Counter(r.user_id for r in requests)
    assert counts["u0"] > 10 * counts["u1"]
    assert "u49" not in counts


def test_active_users_limit_who_asks() -> None:
    requests = request_mix(Mix(requests=1_000, unknown_share=0.0), POPULATION, active_users=5)
    assert len({r.user_id for r in requests}) <= 5


def test_no_categories_means_no_filtered_requests() -> None:
    plain = Population(**{**POPULATION.__dict__, "categories": ()})
    assert all(r.category is None for r in request_mix(Mix(requests=200), plain, active_users=None))
