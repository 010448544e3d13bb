"""Exact top-k, the one implementation: a single score row (the API) and users in bulk.

Both break ties toward the lower item index, so the lab, the evaluation and the API rank
alike. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

__all__ = ["top_k", "top_k_by", "top_positions"]

_EMPTY = np.empty(0, dtype=np.int64)
_TOPK_BLOCK = 128  # items per block when looking for the top k of one row (top_positions)
_SCORE_BUDGET = 1 << 24  # floats per bulk scoring chunk (64 MiB of float32 scores)


def top_positions(scores: np.ndarray, k: int, *, floor: float) -> np.ndarray:
    """Positions of the (at most) k highest scores strictly above `floor`, best first.

    Banned entries hold -inf and never qualify. Ties go to the lower position, so the answer
    is deterministic. The k-th best score is found among a few blocks' items only
    (`_candidate_positions`), then every item at least that good is sorted.
    """
    k = min(k, len(scores))
    if k <= 0:
        return _EMPTY
    candidates = _candidate_positions(scores, k)
    values = scores[candidates]
    if k < len(candidates):  # keep all ties of the k-th best, so the lowest positions win
        kth = np.partition(values, -k)[-k]
        keep = values >= kth
        candidates, values = candidates[keep], values[keep]
    keep = values > floor
    candidates, values = candidates[keep], values[keep]
    return candidates[np.lexsort((candidates, -values))][:k].astype(np.int64)


def _candidate_positions(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions sure to include every score >= the k-th best: the items of the blocks whose
    maximum reaches the k-th best block maximum.

    Why it is enough: k blocks have a maximum >= that threshold t, so at least k items score
    >= t and the k-th best score v is >= t; any block holding an item >= v has its maximum
    >= t. Selecting among a few thousand items instead of all of them matters: numpy's
    argpartition over 100,000 scores costs about as much as computing them.
    """
    n = len(scores)
    full = n - n % _TOPK_BLOCK
    if k * _TOPK_BLOCK * 4 > full:  # too few blocks to gain anything
        return np.arange(n)
    maxima = scores[:full].reshape(-1, _TOPK_BLOCK).max(axis=1)
    threshold = np.partition(maxima, -k)[-k]
    blocks = np.flatnonzero(maxima >= threshold)
    inside = (blocks[:, None] * _TOPK_BLOCK + np.arange(_TOPK_BLOCK)).ravel()
    return np.concatenate([inside, np.arange(full, n)])


def top_k(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    users: np.ndarray,
    *,
    k: int,
    exclude: sp.csr_matrix | None = None,
    allowed_items: np.ndarray | None = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k items per user of a factor model: (item indices int64, scores float32),
    each len(users) x k; see top_k_by for the rules."""
    candidates = _candidates(item_factors.shape[0], allowed_items)
    factors = np.ascontiguousarray(item_factors[candidates])

    def block(chunk: np.ndarray) -> np.ndarray:
        return np.asarray(user_factors[chunk] @ factors.T, dtype=np.float32)

    return top_k_by(
        block,
        users,
        n_items=item_factors.shape[0],
        k=k,
        exclude=exclude,
        candidates=candidates,
        chunk_size=chunk_size,
    )


def top_k_by(
    score_block: Callable[[np.ndarray], np.ndarray],
    users: np.ndarray,
    *,
    n_items: int,
    k: int,
    exclude: sp.csr_matrix | None = None,
    candidates: np.ndarray | None = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items per user from any scorer: `score_block(users)` gives their scores over
    `candidates` (sorted item indices; None: every item), one row per user.

    Items stored in the user's `exclude` row (rows indexed like `users`) never appear; rows
    with fewer eligible items are padded with -1 and -inf. Users are scored in chunks so
    memory stays bounded; the result is deterministic (ties to the lower item index).
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    users = np.asarray(users, dtype=np.int64)
    if candidates is None:
        candidates = np.arange(n_items, dtype=np.int64)
    position = np.full(n_items, -1, dtype=np.int64)
    position[candidates] = np.arange(len(candidates))
    ids = np.full((len(users), k), -1, dtype=np.int64)
    scores = np.full((len(users), k), -np.inf, dtype=np.float32)
    step = chunk_size or max(1, _SCORE_BUDGET // max(len(candidates), 1))
    for lo in range(0, len(users), step):
        chunk = users[lo : lo + step]
        block = np.array(score_block(chunk), dtype=np.float32)  # a copy the masks may write
        if exclude is not None:
            _mask_seen(block, exclude, chunk, position)
        top, top_scores = _best(block, min(k, len(candidates)))
        found = np.isfinite(top_scores)
        ids[lo : lo + len(chunk), : top.shape[1]] = np.where(found, candidates[top], -1)
        scores[lo : lo + len(chunk), : top.shape[1]] = top_scores
    return ids, scores


def _candidates(n_items: int, allowed_items: np.ndarray | None) -> np.ndarray:
    """Sorted distinct item indices that may be recommended."""
    if allowed_items is None:
        return np.arange(n_items, dtype=np.int64)
    allowed = np.unique(np.asarray(allowed_items, dtype=np.int64))
    if len(allowed) and (allowed[0] < 0 or allowed[-1] >= n_items):
        raise IndexError("allowed_items holds an index outside the item factors")
    return allowed


def _mask_seen(
    block: np.ndarray, exclude: sp.csr_matrix, chunk: np.ndarray, position: np.ndarray
) -> None:
    """Set the scores of each user's stored (seen) items to -inf, in place."""
    rows = exclude[chunk]
    row_of = np.repeat(np.arange(len(chunk)), np.diff(rows.indptr))
    column = position[rows.indices]
    hit = column >= 0
    block[row_of[hit], column[hit]] = -np.inf


def _best(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and scores of each row's k highest scores, best first."""
    if k < block.shape[1]:
        part = np.argpartition(block, -k, axis=1)[:, -k:]  # no negated copy of the block
    else:
        part = np.broadcast_to(np.arange(block.shape[1]), block.shape)
    part_scores = np.take_along_axis(block, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    return top, np.take_along_axis(part_scores, order, axis=1)
