"""Time split, ranking metrics, popularity baseline and the promotion rule, on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from offline.evaluation import (
    RankingMetrics,
    choose_cutoff,
    drop_seen,
    popularity_ranking,
    ranking_metrics,
    should_publish,
    time_split,
)
from shared.confidence import EventColumns
from shared.synthetic import ShopConfig, generate_catalog, generate_events


def relevant(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    """A users x items 0/1 matrix with the given relevant items per row."""
    data = [(r, i) for r, items in enumerate(rows) for i in items]
    r, c = zip(*data, strict=True) if data else ((), ())
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


def metrics(k: int = 3, users: int = 10, **values: float) -> RankingMetrics:
    base = {"precision": 0.1, "recall": 0.1, "ndcg": 0.1, "map": 0.1, "coverage": 0.1}
    return RankingMetrics(k=k, users=users, **{**base, **values})


def test_a_perfect_ranking_scores_one() -> None:
    result = ranking_metrics(np.array([[1, 2, 5]]), relevant([[1, 2]], 10), k=3, n_items=10)
    assert (result.users, result.k) == (1, 3)
    assert result.precision == pytest.approx(2 / 3)
    assert result.recall == pytest.approx(1.0)
    assert result.ndcg == pytest.approx(1.0)
    assert result.map == pytest.approx(1.0)


def test_one_hit_at_rank_two() -> None:
    result = ranking_metrics(np.array([[3, 7, 4]]), relevant([[7]], 10), k=3, n_items=10)
    assert result.precision == pytest.approx(1 / 3)
    assert result.recall == pytest.approx(1.0)
    assert result.ndcg == pytest.approx(1 / math.log2(3))  # 0.6309...
    assert result.map == pytest.approx(0.5)


def test_averages_over_users_and_skips_users_without_relevant_items() -> None:
    recommended = np.array([[1, 2, 5], [9, 9, 9], [3, 7, 4]])
    result = ranking_metrics(recommended, relevant([[1, 2], [], [7]], 10), k=3, n_items=10)
    assert result.users == 2
    assert result.ndcg == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    assert result.map == pytest.approx(0.75)
    assert result.coverage == pytest.approx(6 / 10)  # 1, 2, 5, 3, 7, 4: not user 1's 9


def test_recall_is_capped_at_k_relevant_items() -> None:
    result = ranking_metrics(np.array([[0, 1]]), relevant([[0, 1, 2, 3]], 5), k=2, n_items=5)
    assert (result.precision, result.recall, result.ndcg, result.map) == (1.0, 1.0, 1.0, 1.0)


def test_ndcg_and_map_of_a_miss_then_a_hit_among_two_relevant() -> None:
    result = ranking_metrics(np.array([[5, 0, 6]]), relevant([[0, 1]], 8), k=3, n_items=8)
    ideal = 1 + 1 / math.log2(3)
    assert result.ndcg == pytest.approx((1 / math.log2(3)) / ideal)
    assert result.map == pytest.approx((1 / 2) / 2)
    assert result.recall == pytest.approx(1 / 2)


def test_padding_never_counts_as_a_hit_or_as_coverage() -> None:
    result = ranking_metrics(np.array([[4, -1, -1]]), relevant([[4, 9]], 10), k=3, n_items=10)
    assert result.precision == pytest.approx(1 / 3)
    assert result.coverage == pytest.approx(1 / 10)


def test_only_the_first_k_columns_count() -> None:
    result = ranking_metrics(np.array([[0, 1, 2]]), relevant([[2]], 3), k=2, n_items=3)
    assert result.precision == 0.0


def test_no_evaluable_user_gives_zeros() -> None:
    result = ranking_metrics(np.array([[0, 1]]), relevant([[]], 3), k=2, n_items=3)
    assert result == RankingMetrics(2, 0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_ranking_metrics_rejects_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="recommended must be"):
        ranking_metrics(np.array([[0]]), relevant([[0]], 3), k=2, n_items=3)
    with pytest.raises(ValueError, match="one row per recommended row"):
        ranking_metrics(np.array([[0, 1]]), relevant([[0], [1]], 3), k=2, n_items=3)


def test_time_split_never_leaks_the_future_into_training() -> None:
    config = ShopConfig(n_users=200, n_items=100, n_categories=5, n_events=5_000, days=10)
    log = generate_events(config, generate_catalog(config))
    events = EventColumns.from_arrays(
        log.user_ids, log.item_ids, log.types, values=log.values, occurred_at=log.occurred_at
    )
    cutoff = choose_cutoff(events.occurred_at, test_fraction=0.2)
    train, test = time_split(events, cutoff=cutoff)
    assert train.occurred_at.max() < cutoff <= test.occurred_at.min()
    assert len(train) + len(test) == len(events)
    assert len(test) / len(events) == pytest.approx(0.2, abs=0.01)
    assert train.user_ids is events.user_ids
    assert test.item_ids is events.item_ids


def test_cutoff_needs_a_fraction_and_events() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        choose_cutoff(np.array([1.0]), test_fraction=1.0)
    with pytest.raises(ValueError, match="no events"):
        choose_cutoff(np.array([]))


def test_drop_seen_keeps_only_items_new_to_each_user() -> None:
    test = relevant([[0, 1, 2], [1], []], 4)
    seen = relevant([[1], [1, 3], [0]], 4)
    np.testing.assert_array_equal(
        drop_seen(test, seen).toarray(), relevant([[0, 2], [], []], 4).toarray()
    )
    empty = sp.csr_matrix((3, 4))
    assert drop_seen(empty, seen).nnz == 0
    with pytest.raises(ValueError, match="same shape"):
        drop_seen(test, sp.csr_matrix((2, 4)))


def test_popularity_ranking_excludes_seen_items() -> None:
    train = sp.csr_matrix(
        np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=np.float32)
    )
    seen_excluded = popularity_ranking(train, np.array([0, 2]), k=3)
    np.testing.assert_array_equal(seen_excluded, [[1, 2, 3], [3, 4, -1]])
    with_seen = popularity_ranking(train, np.array([0]), k=3, exclude_seen=False)
    np.testing.assert_array_equal(with_seen, [[0, 1, 2]])


def test_publishes_the_best_candidate_without_a_live_version() -> None:
    decision = should_publish(
        metrics(ndcg=0.30),
        label="als 64f",
        popularity=metrics(ndcg=0.20),
        live=None,
        tolerance=0.02,
    )
    assert decision.promote
    assert decision.reason == (
        "als 64f won with ndcg@3 0.3000 (popularity over the window 0.2000); no live version"
    )


def test_a_popularity_winner_is_published_too() -> None:
    decision = should_publish(
        metrics(ndcg=0.25),
        label="popularity (3 d)",
        popularity=metrics(ndcg=0.20),
        live=None,
        tolerance=0.02,
    )
    assert decision.promote
    assert decision.reason.startswith("popularity (3 d) won")


def test_publishes_within_tolerance_of_live() -> None:
    decision = should_publish(
        metrics(ndcg=0.295),
        label="x",
        popularity=metrics(ndcg=0.2),
        live=metrics(ndcg=0.3),
        tolerance=0.02,
    )
    assert decision.promote
    assert "within 2.0% of live 0.3000" in decision.reason


def test_rejects_worse_than_live_beyond_tolerance() -> None:
    decision = should_publish(
        metrics(ndcg=0.29),
        label="x",
        popularity=metrics(ndcg=0.2),
        live=metrics(ndcg=0.3),
        tolerance=0.02,
    )
    assert not decision.promote
    assert decision.reason == (
        "the best candidate, x, ndcg@3 0.2900, is worse than live 0.3000 by more than 2.0% "
        "(floor 0.2940)"
    )


def test_should_publish_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="metric"):
        should_publish(
            metrics(), label="x", popularity=metrics(), live=None, tolerance=0.0, metric="auc"
        )
    with pytest.raises(ValueError, match="same k"):
        should_publish(metrics(k=5), label="x", popularity=metrics(), live=None, tolerance=0.0)
    assert not should_publish(
        metrics(users=0, ndcg=0.5), label="x", popularity=metrics(), live=None, tolerance=0.0
    ).promote
