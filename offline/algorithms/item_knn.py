"""Item-item nearest neighbours: implicit's cosine / BM25 kNN similarity, and item-item scoring.

`fit_item_knn` turns a users x items matrix into a sparse items x items similarity holding each
item's top neighbours; shared.ranking.scoring.item_item_scores scores users' rows against any
item-item matrix (this sparse one, or EASE's dense one) for serving and evaluation.
implicit is imported inside `fit_item_knn` only, so scoring code does not pay for its import.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

__all__ = ["SIMILARITIES", "fit_item_knn"]

SIMILARITIES = ("cosine", "bm25")


def fit_item_knn(
    user_items: sp.csr_matrix,
    *,
    similarity: str = "cosine",
    neighbours: int = 200,
    bm25_k1: float = 100.0,
    bm25_b: float = 0.8,
    num_threads: int = 0,
) -> sp.csr_matrix:
    """Items x items float32 CSR similarity: row i holds i's top-`neighbours` other items.

    `user_items` is users x items, as implicit 0.7's ItemItemRecommender.fit expects. Values are
    used, not just presence: cosine normalises each item's column of values, BM25 saturates
    them with `bm25_k1` and length-normalises items with `bm25_b`; binary input works for both.
    Only positive entries count (a dislike is no co-occurrence). Only positive similarities are
    kept, and never the item itself (zero diagonal), so an item never recommends itself.
    `num_threads` is implicit's own (0: all cores); BLAS is held to one thread around the fit.
    """
    _check_knn_args(similarity, neighbours, num_threads)
    liked = _positive_part(user_items)
    n_items = liked.shape[1]
    if liked.nnz == 0:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    # implicit counts the item itself among its K neighbours: ask for one more, then drop it.
    model = _knn_model(similarity, neighbours + 1, bm25_k1, bm25_b, num_threads)
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        from implicit.utils import ParameterWarning

        # implicit's own normalize()/bm25_weight() hand its kNN a COO matrix, and it says so.
        warnings.filterwarnings("ignore", "Method expects CSR input", ParameterWarning)
        model.fit(liked, show_progress=False)
    return _top_per_row(model.similarity, neighbours)


def _check_knn_args(similarity: str, neighbours: int, num_threads: int) -> None:
    """Refuse parameters implicit would misread or silently accept."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if neighbours < 1:
        raise ValueError(f"neighbours must be at least 1, got {neighbours}")
    if num_threads < 0:
        raise ValueError(f"num_threads must be 0 (all cores) or more, got {num_threads}")


def _positive_part(user_items: sp.csr_matrix) -> sp.csr_matrix:
    """The matrix as float32 CSR with only its positive entries stored."""
    csr = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
    csr.data[csr.data < 0] = 0
    csr.eliminate_zeros()
    return csr


def _knn_model(similarity: str, k: int, k1: float, b: float, num_threads: int) -> Any:
    """implicit's kNN model for this similarity (imported here: implicit is slow to import)."""
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    if similarity == "bm25":
        return BM25Recommender(K=k, K1=k1, B=b, num_threads=num_threads)
    return CosineRecommender(K=k, num_threads=num_threads)


def _top_per_row(matrix: sp.spmatrix, k: int) -> sp.csr_matrix:
    """Each row's k largest positive off-diagonal entries, ties to the lower column, as float32."""
    coo = sp.coo_matrix(matrix)
    keep = (coo.row != coo.col) & (coo.data > 0)
    rows, cols, vals = coo.row[keep], coo.col[keep], coo.data[keep]
    order = np.lexsort((cols, -vals, rows))  # by row, then best first, then lower column
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")
    top = rank < k
    return sp.csr_matrix(
        (vals[top].astype(np.float32), (rows[top], cols[top])), shape=coo.shape, dtype=np.float32
    )
