"""Selection on the holdout: `auto` picks the planted winner, refusals and budgets are recorded."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from offline.holdout import time_split_holdout
from offline.selection import candidate_params, mean_item_support, select
from shared.confidence import EventColumns
from shared.retrain_config import RetrainConfig, retrain_config
from shared.settings import Settings

T0 = 1_700_000_000.0
DAY = 86_400.0


def _config(**settings: object) -> RetrainConfig:
    base = Settings(min_item_events=1, eval_max_users=10_000, training_threads=1, **settings)
    return retrain_config(base)


def _blocks() -> EventColumns:
    """Two blocks of 60 shoppers x 30 items, all of one age: tastes are everything."""
    rng = np.random.default_rng(3)
    users, items, times = [], [], []
    for u in range(120):
        block = u // 60
        for i in rng.choice(30, size=14, replace=False):
            users.append(f"u{u:03d}")
            items.append(f"{'ab'[block]}{i:02d}")
            times.append(T0 - rng.uniform(0, 30) * DAY)
    return EventColumns.from_arrays(users, items, ["view"] * len(users), occurred_at=times)


def _trend() -> EventColumns:
    """Tastes carry nothing (everyone views at random), but each week has its own hit items:
    what shoppers will touch next is what they touch now."""
    rng = np.random.default_rng(5)
    users, items, times = [], [], []
    for week in range(8):
        hits = [f"w{week}-{j}" for j in range(5)]
        for u in range(200):
            for _ in range(3):
                pick = hits[rng.integers(5)] if rng.random() < 0.8 else f"old{rng.integers(60)}"
                users.append(f"u{u:03d}")
                items.append(pick)
                times.append(T0 - (8 - week) * 7 * DAY + rng.uniform(0, 7) * DAY)
    return EventColumns.from_arrays(users, items, ["view"] * len(users), occurred_at=times)


def test_auto_fits_every_algorithm_cheapest_first_and_pinned_only_its_own() -> None:
    config = _config()
    holdout = time_split_holdout(_blocks(), config)
    names = [p.algorithm for p in candidate_params(config, holdout)]
    assert names == ["popularity"] * 3 + ["item_knn", "item_knn", "als", "ease", "ease"]
    pinned = replace(config, algorithm="als")
    assert [p.algorithm for p in candidate_params(pinned, holdout)] == ["popularity"] * 3 + ["als"]
    half_lives = [p.recency_half_life_days for p in candidate_params(config, holdout)[:3]]
    span = holdout.test_span_seconds / DAY
    assert half_lives[0] is None
    assert half_lives[1:] == [round(span / 2, 4), round(span * 2, 4)]


def test_eases_l2_is_half_and_twice_the_mean_shoppers_per_item() -> None:
    config = _config()
    holdout = time_split_holdout(_blocks(), config)
    support = mean_item_support(holdout)
    train = holdout.train.matrix
    assert support == pytest.approx((train > 0).sum() / train.shape[1])
    ease = [p for p in candidate_params(config, holdout) if p.algorithm == "ease"]
    assert [p.effective_regularization for p in ease] == [
        float(f"{support / 2:.2g}"),
        float(f"{support * 2:.2g}"),
    ]


def test_auto_picks_a_personal_model_where_tastes_decide() -> None:
    config = _config()
    selection = select(time_split_holdout(_blocks(), config), config)
    assert selection.best.params.algorithm != "popularity"
    popular = max(
        c.metrics.ndcg for c in selection.candidates if c.params.algorithm == "popularity"
    )
    assert selection.best.metrics is not None
    assert selection.best.metrics.ndcg > popular * 1.5
    assert all(c.metrics is not None for c in selection.candidates)


def test_auto_picks_recent_popularity_where_trends_decide() -> None:
    config = _config()
    selection = select(time_split_holdout(_trend(), config), config)
    assert selection.best.params.algorithm == "popularity"
    assert selection.best.params.recency_half_life_days is not None
    record = selection.to_dict()
    assert record["chosen"] == selection.best.label
    assert len(record["candidates"]) == 8


def test_ease_over_its_item_limit_is_recorded_as_refused_and_the_rest_goes_on() -> None:
    config = replace(_config(), ease_max_items=10)
    selection = select(time_split_holdout(_blocks(), config), config)
    ease = [c for c in selection.candidates if c.params.algorithm == "ease"]
    assert ease[0].metrics is None
    assert ease[0].note is not None
    assert "RECSYS_EASE_MAX_ITEMS=10" in ease[0].note
    assert selection.best.metrics is not None


def test_a_spent_budget_skips_the_rest_and_says_so() -> None:
    config = replace(_config(), selection_budget=1e-9)
    selection = select(time_split_holdout(_blocks(), config), config)
    first, *rest = selection.candidates
    assert first.metrics is not None  # the first candidate always runs
    assert rest
    assert all(c.metrics is None and "budget" in (c.note or "") for c in rest)
    assert selection.best is first


def test_a_candidate_that_fails_is_recorded_and_the_selection_goes_on() -> None:
    config = _config()
    holdout = time_split_holdout(_blocks(), config)
    params = candidate_params(config, holdout)
    als = next(i for i, p in enumerate(params) if p.algorithm == "als")
    broken = replace(params[als], use_gpu=True)  # no CUDA build here: the fit raises
    selection = select(holdout, config, candidates=[*params[:als], broken])
    failed = selection.candidates[-1]
    assert failed.metrics is None
    assert (failed.note or "").startswith("failed:")
    assert selection.best.metrics is not None
