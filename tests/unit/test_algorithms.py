"""Known-answer tests of item-kNN, EASE and popularity: planted structure, no I/O."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from offline.algorithms.ease import MAX_ITEMS_SETTING, EaseTooLarge, ease_cost, fit_ease
from offline.algorithms.item_knn import fit_item_knn
from shared.popularity import SECONDS_PER_DAY, popularity_scores, top_popular
from shared.ranking.scoring import item_item_scores

GROUP_ITEMS = 10  # items 0-9 are group A, 10-19 group B
GROUP_USERS = 30  # users 0-29 are group A, 30-59 group B


def _checkerboard(seed: int = 7) -> tuple[sp.csr_matrix, np.ndarray]:
    """Users x items where each user has 6 items of their own group; also each user's hidden one."""
    rng = np.random.default_rng(seed)
    rows, cols, hidden = [], [], []
    for user in range(2 * GROUP_USERS):
        group = user // GROUP_USERS
        items = group * GROUP_ITEMS + rng.choice(GROUP_ITEMS, size=6, replace=False)
        hidden.append(items[0])
        rows += [user] * 5
        cols += list(items[1:])
    shape = (2 * GROUP_USERS, 2 * GROUP_ITEMS)
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    return train, np.array(hidden)


def _group(items: np.ndarray | int) -> np.ndarray:
    """Planted group (0 for A, 1 for B) of item indices."""
    return np.asarray(items) // GROUP_ITEMS


def _assert_same_group_first(train: sp.csr_matrix, hidden: np.ndarray, scores: np.ndarray) -> None:
    """For every user, the hidden same-group item outscores every unseen other-group item."""
    scores = np.where(train.toarray() > 0, -np.inf, scores)
    for user in range(train.shape[0]):
        own = _group(np.arange(train.shape[1])) == user // GROUP_USERS
        assert scores[user, hidden[user]] > scores[user, ~own].max(), user


@pytest.mark.parametrize("similarity", ["cosine", "bm25"])
def test_knn_ranks_the_hidden_same_group_item_above_the_other_group(similarity: str) -> None:
    train, hidden = _checkerboard()
    knn = fit_item_knn(train, similarity=similarity, neighbours=200, num_threads=1)
    _assert_same_group_first(train, hidden, item_item_scores(train, knn))


@pytest.mark.parametrize("similarity", ["cosine", "bm25"])
def test_knn_rows_hold_at_most_neighbours_planted_items_and_never_the_item_itself(
    similarity: str,
) -> None:
    train, _ = _checkerboard()
    knn = fit_item_knn(train, similarity=similarity, neighbours=3, num_threads=1)
    assert knn.dtype == np.float32
    assert knn.shape == (2 * GROUP_ITEMS, 2 * GROUP_ITEMS)
    assert np.diff(knn.indptr).max() <= 3
    assert np.all(knn.diagonal() == 0)
    for item in range(knn.shape[0]):
        neighbours = knn.indices[knn.indptr[item] : knn.indptr[item + 1]]
        assert neighbours.size > 0
        assert np.all(_group(neighbours) == _group(item))


def test_knn_diagonal_is_zero_even_when_every_item_is_a_neighbour() -> None:
    train, _ = _checkerboard()
    knn = fit_item_knn(train, similarity="bm25", neighbours=1000, num_threads=1)
    assert np.all(knn.diagonal() == 0)
    assert np.diff(knn.indptr).max() == GROUP_ITEMS - 1


def test_cosine_knn_matches_brute_force_top_neighbours() -> None:
    x = sp.random(200, 30, density=0.15, random_state=3, format="csr", dtype=np.float64)
    unit = x.toarray() / np.linalg.norm(x.toarray(), axis=0)
    brute = unit.T @ unit
    np.fill_diagonal(brute, 0)
    knn = fit_item_knn(x, similarity="cosine", neighbours=4, num_threads=1).toarray()
    for item in range(30):
        expected = np.sort(brute[item])[::-1][:4]
        got = np.sort(knn[item][knn[item] > 0])[::-1]
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_knn_refuses_unknown_similarity_and_no_neighbours() -> None:
    train, _ = _checkerboard()
    with pytest.raises(ValueError, match="similarity"):
        fit_item_knn(train, similarity="jaccard")
    with pytest.raises(ValueError, match="neighbours"):
        fit_item_knn(train, neighbours=0)


def test_item_item_scores_agree_for_sparse_and_dense_similarity() -> None:
    train, _ = _checkerboard()
    knn = fit_item_knn(train, neighbours=5, num_threads=1)
    sparse_scores = item_item_scores(train[:7], knn)
    dense_scores = item_item_scores(train[:7], knn.toarray())
    assert sparse_scores.dtype == dense_scores.dtype == np.float32
    assert sparse_scores.shape == (7, 2 * GROUP_ITEMS)
    np.testing.assert_allclose(sparse_scores, dense_scores, rtol=1e-6)
    np.testing.assert_allclose(sparse_scores, (train[:7] @ knn).toarray(), rtol=1e-6)


def test_ease_ranks_the_hidden_same_group_item_above_the_other_group() -> None:
    train, hidden = _checkerboard()
    weights = fit_ease(train)  # the default l2
    _assert_same_group_first(train, hidden, item_item_scores(train, weights))


def test_ease_matches_the_closed_form_with_a_zero_diagonal() -> None:
    x = sp.random(300, 40, density=0.1, random_state=5, format="csr")
    weights = fit_ease(x, l2=3.0)
    inverse = np.linalg.inv((x.T @ x).toarray() + 3.0 * np.eye(40))
    expected = np.eye(40) - inverse / np.diag(inverse)
    assert weights.dtype == np.float32
    assert np.all(np.diagonal(weights) == 0)
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(weights, expected, atol=1e-6)


def test_ease_refuses_a_catalogue_over_its_limit_without_allocating() -> None:
    huge = sp.csr_matrix((3, 2_000_000), dtype=np.float32)  # 32 TB if it were densified
    tracemalloc.start()
    try:
        with pytest.raises(EaseTooLarge, match=f"{MAX_ITEMS_SETTING}=10,000") as refused:
            fit_ease(huge, max_items=10_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert "2,000,000 items" in str(refused.value)
    assert isinstance(refused.value, ValueError)
    with pytest.raises(EaseTooLarge, match="=20:"):
        fit_ease(sp.csr_matrix((3, 21)), max_items=20)


def test_ease_refuses_non_positive_l2() -> None:
    train, _ = _checkerboard()
    for l2 in (0.0, -1.0):
        with pytest.raises(ValueError, match="l2"):
            fit_ease(train, l2=l2)


def test_ease_cost_memory_grows_as_n_squared() -> None:
    small, large = ease_cost(10_000), ease_cost(20_000)
    assert large.peak_bytes == 4 * small.peak_bytes
    assert large.model_bytes == 4 * small.model_bytes == 4 * 4 * 10_000**2
    assert 7.9 < large.flops / small.flops < 8.1
    assert small.peak_bytes >= 8 * 10_000**2 + small.model_bytes  # Gram/inverse + result


def test_popularity_half_life_prefers_recent_events_over_an_older_larger_count() -> None:
    now = 1_700_000_000.0
    month_ago = now - 30 * SECONDS_PER_DAY
    items = np.array([0, 0, 0, 1])
    weights = np.ones(4)
    stamps = np.array([month_ago, month_ago, month_ago, now])
    decayed = popularity_scores(
        items, weights, stamps, n_items=3, reference_time=now, half_life_days=7.0
    )
    assert decayed[1] > decayed[0] > 0
    np.testing.assert_allclose(decayed, [3 * 2 ** (-30 / 7), 1.0, 0.0])
    assert top_popular(decayed, 2).tolist() == [1, 0]


def test_popularity_without_half_life_is_plain_weighted_counts() -> None:
    items = np.array([2, 0, 2, 1, 2])
    weights = np.array([1.0, 4.0, 0.5, 1.0, 2.0])
    stamps = np.array([0.0, 10.0, 2e9, 5.0, 1.0])  # one in the future: no effect either way
    plain = popularity_scores(
        items, weights, stamps, n_items=4, reference_time=100.0, half_life_days=None
    )
    assert plain.dtype == np.float64
    np.testing.assert_array_equal(plain, np.bincount(items, weights, minlength=4))
    future = popularity_scores(
        items[2:3], weights[2:3], stamps[2:3], n_items=4, reference_time=0.0, half_life_days=1.0
    )
    assert future[2] == 0.5  # age clamped to zero


def test_popularity_refuses_non_positive_half_life() -> None:
    one = np.array([0])
    with pytest.raises(ValueError, match="half_life"):
        popularity_scores(one, one, one, n_items=1, reference_time=0.0, half_life_days=0.0)


def test_top_popular_breaks_ties_by_lower_index_and_drops_non_positive_scores() -> None:
    scores = np.array([1.0, 3.0, 3.0, 0.0, 2.0, -1.0, 3.0])
    assert top_popular(scores, 2).tolist() == [1, 2]
    assert top_popular(scores, 4).tolist() == [1, 2, 6, 4]
    assert top_popular(scores, 10).tolist() == [1, 2, 6, 4, 0]
    assert top_popular(scores, 0).tolist() == []


def test_top_popular_restricts_to_allowed_mask_or_indices() -> None:
    scores = np.array([1.0, 3.0, 3.0, 0.0, 2.0])
    mask = np.array([True, False, True, True, False])
    assert top_popular(scores, 5, allowed=mask).tolist() == [2, 0]
    assert top_popular(scores, 2, allowed=np.array([4, 0, 3, 4])).tolist() == [4, 0]
    assert top_popular(scores, 5, allowed=np.array([], dtype=np.int64)).tolist() == []
