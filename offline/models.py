"""Fit any algorithm the product trains, behind one call: `fit_model(matrix, params)`.

Three shapes of model come out, and the export, the evaluation and the API know all three:
- `TrainedFactors` (ALS, BPR: implicit's matrix factorisation; scores = x_u . y_i);
- `ItemItemModel` (item-kNN, EASE: an items x items matrix S; a user's scores are their
  interaction row times S, so a new event changes their list by construction);
- `PopularityModel` (one score per item, the same for every shopper; recency-weighted with
  a half-life, or the plain count of shoppers over the whole window).

Item-item models learn from presence (which items a shopper touched), not from summed event
weights: co-occurrence is what they measure, and summed weights would let a few repeated
views dominate it. Factor models see the confidence (offline.training).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from offline.algorithms.ease import fit_ease
from offline.algorithms.item_knn import fit_item_knn
from offline.dataset import InteractionMatrix, positions
from offline.training import TrainedFactors, fit
from shared.confidence import EventColumns
from shared.model_spec import ModelParams
from shared.popularity import SECONDS_PER_DAY

__all__ = [
    "DEFAULT_EASE_MAX_ITEMS",
    "ItemItemModel",
    "Model",
    "PopularityModel",
    "fit_model",
    "presence",
    "shopper_popularity",
]

DEFAULT_EASE_MAX_ITEMS = 10_000


@dataclass(frozen=True)
class ItemItemModel:
    """An items x items matrix: sparse neighbours (item-kNN) or dense weights (EASE)."""

    similarity: sp.csr_matrix | np.ndarray  # float32; row i: what item i says of each item
    params: ModelParams


@dataclass(frozen=True)
class PopularityModel:
    """One float32 score per item; higher is shown first to every shopper."""

    scores: np.ndarray
    params: ModelParams


Model = TrainedFactors | ItemItemModel | PopularityModel


def fit_model(
    matrix: InteractionMatrix,
    params: ModelParams,
    *,
    events: EventColumns | None = None,
    on_iteration: Callable[[int], None] | None = None,
    ease_max_items: int = DEFAULT_EASE_MAX_ITEMS,
) -> Model:
    """Fit `params.algorithm` on the matrix (users x items, the training window).

    Popularity with a half-life needs the window's `events` (their times); without a
    half-life it counts shoppers per item in the matrix. `on_iteration` only reaches the
    iterative fits (ALS, BPR). EASE refuses a catalogue over `ease_max_items` (EaseTooLarge).
    """
    algorithm = params.algorithm
    if algorithm in ("als", "bpr"):
        return fit(matrix, params, on_iteration=on_iteration)
    if algorithm == "item_knn":
        similarity = fit_item_knn(
            presence(matrix.matrix),
            similarity=params.similarity,
            neighbours=params.neighbours,
            bm25_k1=params.bm25_k1,
            bm25_b=params.bm25_b,
            num_threads=params.num_threads,
        )
        return ItemItemModel(similarity, params)
    if algorithm == "ease":
        weights = fit_ease(
            presence(matrix.matrix),
            l2=params.effective_regularization,
            max_items=ease_max_items,
        )
        return ItemItemModel(weights, params)
    if algorithm == "popularity":
        return PopularityModel(_popularity(matrix, params, events), params)
    raise ValueError(f"no fit for algorithm {algorithm!r}")


def presence(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """1.0 where the user showed interest (a positive entry), nothing elsewhere."""
    csr = sp.csr_matrix(matrix)
    kept = sp.csr_matrix((csr.data > 0).astype(np.float32), copy=False)
    result = sp.csr_matrix((kept.data, csr.indices, csr.indptr), shape=csr.shape)
    result.eliminate_zeros()
    return result


def _popularity(
    matrix: InteractionMatrix, params: ModelParams, events: EventColumns | None
) -> np.ndarray:
    half_life = params.recency_half_life_days
    if half_life is None:
        counts = np.bincount(presence(matrix.matrix).indices, minlength=matrix.shape[1])
        return counts.astype(np.float32)
    if events is None:
        raise ValueError("popularity with a half-life needs the window's events")
    return shopper_popularity(
        events,
        item_ids=matrix.item_ids,
        reference_time=float(events.occurred_at.max()) if len(events) else 0.0,
        half_life_days=half_life,
    )


def shopper_popularity(
    events: EventColumns,
    *,
    item_ids: np.ndarray,
    reference_time: float,
    half_life_days: float,
) -> np.ndarray:
    """Per item of `item_ids`: the shoppers who touched it, each weighted by the recency of
    their latest event on it, 2^(-age / half-life). Repeats by one shopper count once, so a
    bot's thousand views weigh as one shopper's."""
    if half_life_days <= 0:
        raise ValueError("half_life_days must be > 0")
    column = positions(events.item_ids, np.asarray(item_ids))[events.item_index]
    keep = column >= 0
    users = events.user_index[keep].astype(np.int64)
    items = column[keep].astype(np.int64)
    times = events.occurred_at[keep]
    if len(items) == 0:
        return np.zeros(len(item_ids), dtype=np.float32)
    pair = users * len(item_ids) + items
    order = np.lexsort((times, pair))
    last = np.r_[pair[order][1:] != pair[order][:-1], True]
    latest = order[last]
    age_days = np.maximum(reference_time - times[latest], 0.0) / SECONDS_PER_DAY
    weights = np.exp2(-age_days / half_life_days)
    scores = np.bincount(items[latest], weights=weights, minlength=len(item_ids))
    return scores.astype(np.float32)
