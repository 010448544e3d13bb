"""top_positions: the exact k best above a floor, ties to the lower position, at any size."""

from __future__ import annotations

import numpy as np
import pytest

from shared.ranking.topk import top_positions


def reference(scores: np.ndarray, k: int, floor: float) -> np.ndarray:
    """Sort everything: best score first, then lower position; drop what is not above floor."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[scores[order] > floor][:k]


@pytest.mark.parametrize("n", [1, 5, 127, 128, 129, 1_000, 20_000, 100_003])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_matches_a_full_sort_on_random_scores(n: int, k: int) -> None:
    rng = np.random.default_rng(n * 1000 + k)
    scores = rng.standard_normal(n).astype(np.float32)
    np.testing.assert_array_equal(
        top_positions(scores, k, floor=-np.inf), reference(scores, k, -np.inf)
    )


@pytest.mark.parametrize("seed", range(20))
def test_ties_banned_items_and_the_floor(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30_000))
    scores = rng.integers(-3, 4, size=n).astype(np.float32)  # massive ties
    scores[rng.random(n) < rng.random()] = -np.inf  # banned, sometimes nearly everything
    k = int(rng.integers(1, 120))
    floor = float(rng.choice([-np.inf, -1.0, 2.0]))
    np.testing.assert_array_equal(
        top_positions(scores, k, floor=floor), reference(scores, k, floor)
    )


def test_all_banned_gives_nothing() -> None:
    scores = np.full(50_000, -np.inf, dtype=np.float32)
    assert len(top_positions(scores, 10, floor=-np.inf)) == 0
    assert len(top_positions(np.ones(3, np.float32), 0, floor=-np.inf)) == 0
