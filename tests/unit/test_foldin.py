"""Fold-in math against implicit's own solver and the trained vectors it should reproduce."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from offline.dataset import InteractionMatrix, build_matrix
from offline.training import TrainedFactors, fit
from shared.confidence import ConfidenceSettings, EventColumns, event_confidence, scale_confidence
from shared.model_spec import ModelParams
from shared.ranking.foldin import (
    FoldInModel,
    event_raw_confidence,
    fold_in,
    fold_in_events,
    pair_confidence,
    seen_raw_confidence,
)

RAW = np.array([-3.0, -0.5, 0.0, 1.0, 2.5, 40.0])


def _single_views(n_users: int = 40, n_items: int = 40) -> InteractionMatrix:
    """Two blocks; every pair is one view, so the seen approximation (one view) is exact."""
    rng = np.random.default_rng(7)
    users, items = [], []
    for u in range(n_users):
        block = u * 2 // n_users
        for i in rng.choice(n_items // 2, size=12, replace=False):
            users.append(f"u{u:02d}")
            items.append(f"i{block * n_items // 2 + i:02d}")
    events = EventColumns.from_arrays(
        users, items, ["view"] * len(users), occurred_at=[0.0] * len(users)
    )
    return build_matrix(events, confidence=ConfidenceSettings(), reference_time=0.0)


def _trained(iterations: int) -> tuple[InteractionMatrix, TrainedFactors, FoldInModel]:
    matrix = _single_views()
    params = ModelParams(factors=8, iterations=iterations, num_threads=1, random_state=0)
    trained = fit(matrix, params)
    return matrix, trained, FoldInModel.build(trained.item_factors, params)


@pytest.mark.parametrize("scaling", ["none", "log"])
def test_pair_confidence_scales_like_training(scaling: str) -> None:
    params = ModelParams(scaling=scaling, alpha=2.0)
    model = FoldInModel.build(np.eye(3, dtype=np.float32), params)
    expected = scale_confidence(sp.csr_matrix(RAW[None, :]), method=scaling, alpha=2.0)
    got = pair_confidence(model, RAW, user_items=5, n_items=3)
    np.testing.assert_allclose(got[RAW != 0], expected.data, rtol=1e-6)
    assert got[RAW == 0].tolist() == [0.0]


def test_the_plain_solve_is_implicits_recalculate_user() -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(0)
    factors = rng.normal(size=(30, 6)).astype(np.float32)
    items = np.array([2, 5, 11, 17])
    confidence = np.array([2.4, 6.5, -3.0, 1.0])  # -3: a dislike (p = 0, weight 3)
    params = ModelParams(factors=6, regularization=0.7)
    ours = fold_in(
        FoldInModel.build(factors, params), items, before=0 * confidence, after=confidence
    )
    als = AlternatingLeastSquares(factors=6, regularization=0.7, alpha=1.0, random_state=0)
    als.item_factors = factors
    row = sp.csr_matrix((confidence, (np.zeros(4, int), items)), shape=(1, 30), dtype=np.float32)
    np.testing.assert_allclose(ours, als.recalculate_user(0, row), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("iterations", "tolerance"), [(15, 0.05), (50, 0.005)])
def test_folding_in_a_trained_user_reproduces_the_trained_vector(
    iterations: int, tolerance: float
) -> None:
    """Not exactly: the stored vector came from 3 conjugate-gradient steps against the item
    factors of the sweep before the last, while fold-in solves exactly against the final ones.
    The gap is what a converged fit removes, so the bound tightens with more iterations."""
    matrix, trained, model = _trained(iterations)
    for user in range(matrix.shape[0]):
        row = matrix.matrix[user]
        after = pair_confidence(model, row.data, user_items=row.nnz, n_items=40)
        vector = fold_in(model, row.indices, before=np.zeros_like(after), after=after)
        target = trained.user_factors[user]
        assert np.linalg.norm(vector - target) <= tolerance * np.linalg.norm(target)


def test_the_anchored_solve_returns_the_trained_vector_when_nothing_changed() -> None:
    matrix, trained, model = _trained(15)
    row = matrix.matrix[3]
    confidence = pair_confidence(model, row.data * 4, user_items=row.nnz, n_items=40)
    vector = fold_in(
        model, row.indices, before=confidence, after=confidence, trained=trained.user_factors[3]
    )
    np.testing.assert_allclose(vector, trained.user_factors[3], rtol=1e-5, atol=1e-6)


def test_fold_in_events_adds_new_confidence_to_seen_pairs_and_skips_empty_news() -> None:
    matrix, trained, model = _trained(15)
    seen = matrix.matrix[3].indices.astype(np.int64)
    anchor = trained.user_factors[3]
    common = {"seen": seen, "seen_raw": 1.0}
    nothing = fold_in_events(model, rows=seen[:1], raw=np.zeros(1), trained=anchor, **common)
    assert nothing is None
    dislike_only = fold_in_events(
        model, seen=seen[:0], rows=seen[:1], raw=np.array([-2.0]), seen_raw=1.0, trained=None
    )
    assert dislike_only is None
    other_block = np.array([39, 38])
    moved = fold_in_events(
        model, rows=other_block, raw=np.array([8.0, 8.0]), trained=anchor, **common
    )
    assert moved is not None
    assert moved.dtype == np.float32
    direction = trained.item_factors[other_block].mean(axis=0)
    assert moved @ direction > anchor @ direction


def test_seen_pairs_count_one_event_of_the_lightest_positive_type() -> None:
    assert seen_raw_confidence(ConfidenceSettings()) == 1.0
    no_views = ConfidenceSettings(weights={"view": 0.0, "click": 3.0, "purchase": 9.0})
    assert seen_raw_confidence(no_views) == 3.0


def test_event_raw_confidence_is_the_training_weighting() -> None:
    settings = ConfidenceSettings(half_life_days=2.0, ratings="signed")
    types = ["view", "purchase", "rating", "rating", "add_to_cart"]
    values = [None, 3.0, 5.0, 1.0, None]
    times = [0.0, 86_400.0, 2 * 86_400.0, 3 * 86_400.0, 9 * 86_400.0]
    got = event_raw_confidence(types, values, times, settings, reference_time=4 * 86_400.0)
    columns = EventColumns.from_arrays(
        ["u"] * 5,
        ["i"] * 5,
        types,
        values=[np.nan if v is None else v for v in values],
        occurred_at=times,
    )
    np.testing.assert_allclose(
        got, event_confidence(columns, settings, reference_time=4 * 86_400.0)
    )
