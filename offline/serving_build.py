"""The extra arrays a serving strategy needs, built once at export time into the version.

Each strategy's precomputation happens here, on the training worker, so an API process only
memory-maps (or, for the ANN index, deserializes) what this wrote. Everything is a plain
`.npy` array (no pickle): precomputed lists as int32/float32 tables, the HNSW index as the
bytes faiss serializes it to, float16 factors as a float16 matrix.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from shared.ranking.scoring import item_item_scores
from shared.ranking.topk import top_k, top_k_by
from shared.serving_strategy import ServingStrategy

__all__ = [
    "ann_index_bytes",
    "float16_factors",
    "item_item_precomputed",
    "precomputed_lists",
    "serving_arrays",
]


def serving_arrays(
    strategy: ServingStrategy,
    *,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    seen: sp.csr_matrix,
    user_activity: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Arrays to store next to the factors so the API can follow `strategy` (none for
    exact and batched, which only read the item factors).

    `seen` (users x items) is what a user must never be recommended; `user_activity` (one
    number per user, higher = more active) picks who gets a precomputed list when
    `strategy.precomputed_users` caps them (None: the number of items each user has seen).
    """
    if strategy.name == "precomputed":
        activity = np.diff(seen.indptr) if user_activity is None else user_activity
        return precomputed_lists(
            user_factors,
            item_factors,
            seen,
            n=strategy.precomputed_n,
            users=_most_active(user_factors, activity, strategy.precomputed_users),
        )
    if strategy.name == "ann":
        return {"ann_index": ann_index_bytes(item_factors, strategy)}
    if strategy.name == "float16":
        return {"item_factors_f16": float16_factors(item_factors)}
    return {}


def _most_active(user_factors: np.ndarray, activity: np.ndarray, limit: int | None) -> np.ndarray:
    """Rows of the `limit` most active users with usable (finite) vectors, sorted.

    A user whose vector holds NaN is answered from popularity by the API, so a list made
    from that vector would be wrong; ties in activity go to the lower row (deterministic).
    """
    usable = np.flatnonzero(np.isfinite(user_factors).all(axis=1))
    if limit is not None and limit < len(usable):
        order = np.lexsort((usable, -np.asarray(activity, dtype=np.float64)[usable]))
        usable = usable[order[:limit]]
    return np.sort(usable).astype(np.int32)


def precomputed_lists(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    seen: sp.csr_matrix,
    *,
    n: int,
    users: np.ndarray,
) -> dict[str, np.ndarray]:
    """Each listed user's exact top-n unseen items: the same scores and tie order the API's
    exact path gives, so a lookup that survives the request's filters is that answer.

    Rows with fewer than n unseen items are padded with item -1 and score -inf.
    """
    users = np.asarray(users, dtype=np.int32)
    width = min(n, item_factors.shape[0])
    items, scores = top_k(
        user_factors, item_factors, users.astype(np.int64), k=max(width, 1), exclude=seen
    )
    return {
        "precomputed_users": users,
        "precomputed_items": items[:, :width].astype(np.int32),
        "precomputed_scores": scores[:, :width].astype(np.float32),
    }


def ann_index_bytes(item_factors: np.ndarray, strategy: ServingStrategy) -> np.ndarray:
    """An HNSW inner-product index over the item factors, serialized by faiss to uint8.

    Item i of the index is item row i of the version. efSearch is stored too, but the API
    sets it again from the manifest's strategy when it loads the index. The build uses every
    core: loading an index (ranking.strategies.AnnIndex) sets faiss to one thread for the whole
    process, which a later build in the same process (the tradeoff lab) must not inherit.
    """
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    index = faiss.IndexHNSWFlat(factors.shape[1], strategy.ann_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = strategy.ann_ef_construction
    index.hnsw.efSearch = strategy.ann_ef_search
    if len(factors):
        index.add(factors)
    return np.asarray(faiss.serialize_index(index), dtype=np.uint8)


def float16_factors(item_factors: np.ndarray) -> np.ndarray:
    """The item factors in half precision; ValueError if a value does not fit (|x| > 65504)."""
    half = np.asarray(item_factors).astype(np.float16)
    if not np.isfinite(half).all():
        raise ValueError("item factors overflow float16; serve this model with another strategy")
    return half


def item_item_precomputed(
    similarity: sp.csr_matrix | np.ndarray, seen: sp.csr_matrix, strategy: ServingStrategy
) -> dict[str, np.ndarray]:
    """Precomputed lists of an item-item version: each user's seen row times the matrix, the
    same scores the API's exact path gives that user, top-n unseen (most active users first
    when `strategy.precomputed_users` caps them)."""
    activity = np.diff(seen.indptr)
    users = np.arange(seen.shape[0], dtype=np.int32)
    if strategy.precomputed_users is not None and strategy.precomputed_users < len(users):
        order = np.lexsort((users, -activity))
        users = np.sort(users[order[: strategy.precomputed_users]]).astype(np.int32)
    width = min(strategy.precomputed_n, seen.shape[1])

    def block(chunk: np.ndarray) -> np.ndarray:
        return item_item_scores(seen[chunk], similarity)

    items, scores = top_k_by(
        block, users.astype(np.int64), n_items=seen.shape[1], k=max(width, 1), exclude=seen
    )
    return {
        "precomputed_users": users,
        "precomputed_items": items[:, :width].astype(np.int32),
        "precomputed_scores": scores[:, :width].astype(np.float32),
    }
