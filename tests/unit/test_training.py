"""The model contract on a matrix with a known answer, and exact filtered top-k ranking."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from offline.dataset import InteractionMatrix
from offline.training import TrainedFactors, fit, gpu_available
from shared.model_spec import ModelParams
from shared.ranking.topk import top_k

BLOCK = 20  # two blocks of 20 users x 20 items


def block_diagonal() -> tuple[sp.csr_matrix, np.ndarray]:
    """Users like every item of their own block; one such item per user is held out."""
    n = 2 * BLOCK
    liked = np.zeros((n, n), dtype=np.float32)
    liked[:BLOCK, :BLOCK] = liked[BLOCK:, BLOCK:] = 1.0
    users = np.arange(n)
    held_out = (users // BLOCK) * BLOCK + (users * 7) % BLOCK
    liked[users, held_out] = 0.0
    return sp.csr_matrix(liked), held_out


PARAMS = {
    "als": ModelParams(algorithm="als", factors=8, num_threads=1, random_state=0),
    "bpr": ModelParams(algorithm="bpr", factors=8, num_threads=1, random_state=0),
}


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_held_out_items_of_the_own_block_rank_above_the_other_block(algorithm: str) -> None:
    train, held_out = block_diagonal()
    trained = fit(train, PARAMS[algorithm])
    scores = trained.user_factors @ trained.item_factors.T
    users = np.arange(train.shape[0])
    other_block = (users[:, None] < BLOCK) != (np.arange(train.shape[1])[None, :] < BLOCK)
    best_elsewhere = np.where(other_block, scores, -np.inf).max(axis=1)
    assert (scores[users, held_out] > best_elsewhere).all()
    ids, _ = top_k(trained.user_factors, trained.item_factors, users, k=1, exclude=train)
    np.testing.assert_array_equal(ids[:, 0], held_out)


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_factors_are_float32_and_score_as_a_plain_product(algorithm: str) -> None:
    train, _ = block_diagonal()
    trained = fit(InteractionMatrix(train, np.arange(40), np.arange(40)), PARAMS[algorithm])
    assert isinstance(trained, TrainedFactors)
    assert trained.user_factors.dtype == trained.item_factors.dtype == np.float32
    assert trained.user_factors.shape[0] == trained.item_factors.shape[0] == 40
    if algorithm == "bpr":  # implicit keeps the item bias in a last column; users hold a 1
        assert trained.user_factors.shape[1] == 9
        np.testing.assert_array_equal(trained.user_factors[:, -1], 1.0)


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_fit_is_deterministic_for_a_random_state_on_one_thread(algorithm: str) -> None:
    train, _ = block_diagonal()
    first, second = fit(train, PARAMS[algorithm]), fit(train, PARAMS[algorithm])
    np.testing.assert_array_equal(first.user_factors, second.user_factors)
    np.testing.assert_array_equal(first.item_factors, second.item_factors)


def test_on_iteration_sees_every_iteration_and_can_stop_the_fit() -> None:
    train, _ = block_diagonal()
    seen: list[int] = []
    fit(train, ModelParams(factors=4, iterations=3, num_threads=1), on_iteration=seen.append)
    assert seen == [1, 2, 3]

    class Cancelled(Exception):
        pass

    def stop(iteration: int) -> None:
        raise Cancelled

    for algorithm in ("als", "bpr"):
        with pytest.raises(Cancelled):
            fit(train, ModelParams(algorithm=algorithm, factors=4), on_iteration=stop)


def test_params_resolve_per_algorithm_defaults_for_the_manifest() -> None:
    als, bpr = ModelParams().to_dict(), ModelParams(algorithm="bpr").to_dict()
    assert (als["iterations"], als["regularization"], als["scaling"]) == (15, 5.0, "log")
    assert (bpr["iterations"], bpr["regularization"]) == (100, 0.01)
    assert ModelParams(regularization=0.5, iterations=3).to_dict()["regularization"] == 0.5


@pytest.mark.parametrize(
    "kwargs",
    [{"algorithm": "svd"}, {"factors": 0}, {"scaling": "sqrt"}, {"regularization": -1.0}],
)
def test_params_reject_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        ModelParams(**kwargs)  # type: ignore[arg-type]


def test_fit_refuses_an_empty_matrix() -> None:
    with pytest.raises(ValueError, match="empty"):
        fit(sp.csr_matrix((3, 3), dtype=np.float32), ModelParams())


# Item scores for user 0 are 5, 4, 3, 2, 1; for user 1 they are reversed.
USERS = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
ITEMS = np.array([[5, 1], [4, 2], [3, 3], [2, 4], [1, 5]], dtype=np.float32)


def test_top_k_ranks_by_exact_score() -> None:
    ids, scores = top_k(USERS, ITEMS, np.array([0, 1]), k=3)
    np.testing.assert_array_equal(ids, [[0, 1, 2], [4, 3, 2]])
    np.testing.assert_array_equal(scores, [[5, 4, 3], [5, 4, 3]])
    assert ids.dtype == np.int64
    assert scores.dtype == np.float32


def test_top_k_never_returns_excluded_or_disallowed_items() -> None:
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=np.float32))
    ids, _ = top_k(USERS, ITEMS, np.array([0, 1]), k=2, exclude=exclude)
    np.testing.assert_array_equal(ids, [[1, 2], [3, 2]])
    ids, _ = top_k(
        USERS, ITEMS, np.array([1, 0]), k=2, exclude=exclude, allowed_items=np.array([0, 2, 4])
    )
    np.testing.assert_array_equal(ids, [[2, 0], [2, 4]])


def test_top_k_pads_when_fewer_items_are_eligible() -> None:
    exclude = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    ids, scores = top_k(
        USERS, ITEMS, np.array([0]), k=4, exclude=exclude, allowed_items=np.array([1, 2, 3])
    )
    np.testing.assert_array_equal(ids, [[2, 3, -1, -1]])
    np.testing.assert_array_equal(scores, [[3, 2, -np.inf, -np.inf]])
    ids, _ = top_k(USERS, ITEMS, np.array([1]), k=7)
    np.testing.assert_array_equal(ids, [[4, 3, 2, 1, 0, -1, -1]])


def test_top_k_in_chunks_equals_top_k_at_once() -> None:
    rng = np.random.default_rng(1)
    users, items = rng.normal(size=(50, 4)), rng.normal(size=(30, 4))
    seen = sp.random(50, 30, density=0.2, format="csr", random_state=rng)
    whole = top_k(users, items, np.arange(50), k=5, exclude=seen)
    chunked = top_k(users, items, np.arange(50), k=5, exclude=seen, chunk_size=7)
    np.testing.assert_array_equal(whole[0], chunked[0])
    assert not (seen[np.arange(50)[:, None], whole[0]].toarray()).any()


def test_top_k_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k must"):
        top_k(USERS, ITEMS, np.array([0]), k=0)
    with pytest.raises(IndexError):
        top_k(USERS, ITEMS, np.array([0]), k=1, allowed_items=np.array([5]))


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_gpu_training_where_there_is_a_gpu_and_a_clear_refusal_where_not(algorithm: str) -> None:
    train, _ = block_diagonal()
    params = ModelParams(algorithm=algorithm, factors=8, random_state=0, use_gpu=True)
    if not gpu_available():  # CI and most machines: nothing may require a GPU
        with pytest.raises(ValueError, match="CUDA"):
            fit(train, params)
        return
    trained = fit(train, params)
    assert trained.user_factors.dtype == np.float32
    assert trained.item_factors.shape[0] == train.shape[1]
    ids, _ = top_k(trained.user_factors, trained.item_factors, np.arange(40), k=1, exclude=train)
    assert (ids[:, 0] // BLOCK == np.arange(40) // BLOCK).mean() > 0.9  # its own block's item
