"""Item popularity: per-item sums of event weights, optionally decayed by age, and the top k.

Pure numpy, shared by the offline trainer and the API (the popularity fallback for cold users).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SECONDS_PER_DAY", "popularity_scores", "top_popular"]

SECONDS_PER_DAY = 86_400.0


def popularity_scores(
    item_index: np.ndarray,
    weights: np.ndarray,
    occurred_at: np.ndarray,
    *,
    n_items: int,
    reference_time: float,
    half_life_days: float | None,
) -> np.ndarray:
    """float64 score per item: the sum of its events' weights, each times 2^(-age / half-life).

    age = max(reference_time - occurred_at, 0) in days (both in epoch seconds), so an event
    stamped after reference_time counts in full; half_life_days None means no decay.
    """
    items = np.asarray(item_index)
    values = np.asarray(weights, dtype=np.float64)
    times = np.asarray(occurred_at, dtype=np.float64)
    _check_events(items, values, times, n_items)
    items = items.astype(np.intp, copy=False)  # bincount wants intp (an empty list is float)
    if half_life_days is not None:
        if not half_life_days > 0:
            raise ValueError(f"half_life_days must be positive or None, got {half_life_days}")
        age_days = np.maximum(reference_time - times, 0.0) / SECONDS_PER_DAY
        values = values * np.exp2(-age_days / half_life_days)
    return np.bincount(items, weights=values, minlength=n_items).astype(np.float64, copy=False)


def top_popular(scores: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> np.ndarray:
    """Indices (int64) of up to k items with score > 0, best first, ties to the lower index.

    `allowed`, a boolean mask over items or an array of item indices, restricts the candidates.
    """
    if k < 0:
        raise ValueError(f"k must not be negative, got {k}")
    values = np.asarray(scores, dtype=np.float64)
    candidates = _candidates(values.shape[0], allowed)
    candidates = candidates[values[candidates] > 0]
    if k == 0 or candidates.size == 0:
        return np.empty(0, dtype=np.int64)
    if candidates.size > k:  # keep everything tied with the k-th best, then sort exactly
        kth = np.partition(values[candidates], candidates.size - k)[candidates.size - k]
        candidates = candidates[values[candidates] >= kth]
    order = np.lexsort((candidates, -values[candidates]))
    return candidates[order[:k]].astype(np.int64, copy=False)


def _check_events(items: np.ndarray, values: np.ndarray, times: np.ndarray, n_items: int) -> None:
    """Refuse event arrays of unequal shapes, non-integer indices, or indices off the catalogue."""
    if not (items.ndim == 1 and items.shape == values.shape == times.shape):
        raise ValueError("item_index, weights and occurred_at must be 1-D arrays of one length")
    if n_items < 0:
        raise ValueError(f"n_items must not be negative, got {n_items}")
    if items.size and not np.issubdtype(items.dtype, np.integer):
        raise ValueError(f"item_index must hold integers, got {items.dtype}")
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"item_index must lie in [0, {n_items})")


def _candidates(n_items: int, allowed: np.ndarray | None) -> np.ndarray:
    """Sorted unique candidate indices: all items, a boolean mask's items, or the given ones."""
    if allowed is None:
        return np.arange(n_items, dtype=np.int64)
    mask_or_index = np.asarray(allowed)
    if mask_or_index.dtype == np.bool_:
        if mask_or_index.shape != (n_items,):
            raise ValueError(
                f"allowed mask must have shape ({n_items},), got {mask_or_index.shape}"
            )
        return np.flatnonzero(mask_or_index).astype(np.int64)
    index = np.unique(mask_or_index.astype(np.int64, copy=False))
    if index.size and (index[0] < 0 or index[-1] >= n_items):
        raise ValueError(f"allowed indices must lie in [0, {n_items})")
    return index
