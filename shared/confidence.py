"""Event confidence: the event types, their default weights and how one event weighs.

The one home of what both sides need to weigh events alike: training sums these weights into
its matrix, the API folds a shopper's newest events in with the same function. Pure numpy;
imports nothing of the project but nothing else either (implicit only lazily, for BM25).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "BM25_B",
    "BM25_K1",
    "DEFAULT_WEIGHTS",
    "EVENT_TYPES",
    "RATING_MODES",
    "SCALINGS",
    "TYPE_CODES",
    "ConfidenceSettings",
    "EventColumns",
    "event_confidence",
    "scale_confidence",
]

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")
TYPE_CODES: dict[str, int] = {name: code for code, name in enumerate(EVENT_TYPES)}
# Default weight of one event of each non-rating type: each funnel step says about twice as
# much about interest as the one before it (README, "How events are weighted").
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
}
SCALINGS = ("none", "log", "bm25")
BM25_K1 = 100.0  # implicit's lastfm example's K1 and B; recorded per version in ModelParams
BM25_B = 0.8
_RATING = TYPE_CODES["rating"]
_SECONDS_PER_DAY = 86_400.0
RATING_MODES = ("scaled", "above_neutral", "signed")


@dataclass(frozen=True)
class EventColumns:
    """One row per event as parallel numpy arrays; ids are codes into two dictionaries."""

    user_index: np.ndarray  # int32 codes into user_ids
    item_index: np.ndarray  # int32 codes into item_ids
    user_ids: np.ndarray  # distinct user ids (str)
    item_ids: np.ndarray  # distinct item ids (str)
    type_code: np.ndarray  # int8 index into EVENT_TYPES
    value: np.ndarray  # float, NaN when absent
    occurred_at: np.ndarray  # float64 epoch seconds (UTC)

    def __post_init__(self) -> None:
        """Refuse columns of different lengths before they silently misalign rows."""
        n = len(self.user_index)
        columns = (self.item_index, self.type_code, self.value, self.occurred_at)
        if any(len(column) != n for column in columns):
            raise ValueError("EventColumns columns must all have the same length")

    def __len__(self) -> int:
        """Number of events."""
        return len(self.user_index)

    def subset(self, mask: np.ndarray) -> EventColumns:
        """The events selected by a boolean mask (or index array); dictionaries are kept."""
        return replace(
            self,
            user_index=self.user_index[mask],
            item_index=self.item_index[mask],
            type_code=self.type_code[mask],
            value=self.value[mask],
            occurred_at=self.occurred_at[mask],
        )

    @classmethod
    def from_arrays(
        cls,
        user_ids: Sequence[str] | np.ndarray,
        item_ids: Sequence[str] | np.ndarray,
        types: Sequence[str] | np.ndarray,
        *,
        values: Sequence[float] | np.ndarray | None = None,
        occurred_at: Sequence[float] | np.ndarray,
    ) -> EventColumns:
        """Encode plain per-event arrays (tests, synthetic logs); times as epoch s or datetime64."""
        users, user_index = np.unique(np.asarray(user_ids, dtype=object), return_inverse=True)
        items, item_index = np.unique(np.asarray(item_ids, dtype=object), return_inverse=True)
        kinds, kind_index = np.unique(np.asarray(types, dtype=object), return_inverse=True)
        unknown = set(kinds.tolist()) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types: {sorted(unknown)}")
        codes = np.array([TYPE_CODES[kind] for kind in kinds], dtype=np.int8)
        n = len(user_index)
        times = np.asarray(occurred_at)
        if np.issubdtype(times.dtype, np.datetime64):
            times = times.astype("datetime64[us]").astype(np.int64) / 1e6
        return cls(
            user_index=user_index.astype(np.int32),
            item_index=item_index.astype(np.int32),
            user_ids=users,
            item_ids=items,
            type_code=codes[kind_index].reshape(n),
            value=np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64),
            occurred_at=times.astype(np.float64),
        )


@dataclass(frozen=True)
class ConfidenceSettings:
    """How much one event says about a user's interest in an item; recorded in each manifest.

    Ratings (`ratings`):
    - "scaled" (the default): every rating is a positive interaction, weighing
      `rating_weight * value / rating_scale`: the top of the scale weighs `rating_weight` (a
      purchase's weight by default), a low rating less but never nothing. A shopper who rated
      an item chose it and consumed it; on real rating logs, dropping low ratings loses more
      than it gains. `rating_scale` is the top of the log's scale: None reads it off the data
      (the largest rating), and a retrain records the value it used so fold-in weighs alike.
    - "above_neutral": `rating_weight * (value - rating_neutral)`, nothing at or below it.
    - "signed": the same, and a rating below neutral subtracts from the pair's sum; a pair
      whose sum ends below zero reaches ALS as a dislike.
    Other event types ignore `value` (e.g. a quantity).
    """

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    ratings: str = "scaled"
    rating_neutral: float = 3.0
    rating_weight: float = 8.0
    rating_scale: float | None = None  # "scaled": the top rating; None: the data's largest
    half_life_days: float | None = None  # None: no time decay

    def __post_init__(self) -> None:
        """Reject settings that would silently weigh events wrong."""
        unknown = set(self.weights) - set(EVENT_TYPES) - {"rating"}
        if unknown:
            raise ValueError(f"weights for unknown event types: {sorted(unknown)}")
        if "rating" in self.weights:
            raise ValueError("ratings are weighted by rating_weight (and rating_neutral)")
        if any(not np.isfinite(w) or w < 0 for w in self.weights.values()):
            raise ValueError("event weights must be finite and >= 0")
        if self.ratings not in RATING_MODES:
            raise ValueError(f"ratings must be one of {RATING_MODES}")
        if self.rating_weight < 0:
            raise ValueError("rating_weight must be >= 0")
        if self.rating_scale is not None and not self.rating_scale > 0:
            raise ValueError("rating_scale must be > 0 (or None: read off the data)")
        if self.half_life_days is not None and not self.half_life_days > 0:
            raise ValueError("half_life_days must be > 0 (or None for no decay)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for the run manifest."""
        return {**asdict(self), "weights": dict(self.weights)}

    def resolved_for(self, events: EventColumns) -> ConfidenceSettings:
        """These settings with `rating_scale` fixed from `events` when it was left to the data
        (what a retrain records, so the API's fold-in weighs new ratings alike)."""
        if self.ratings != "scaled" or self.rating_scale is not None:
            return self
        return replace(self, rating_scale=_largest_rating(events))


def event_confidence(
    events: EventColumns, confidence: ConfidenceSettings, *, reference_time: float
) -> np.ndarray:
    """Confidence of each event (float64); 0 for events that carry none (e.g. ignored ratings).

    Decay halves a weight every `half_life_days` of age before `reference_time`; events after
    it count as new (age 0), never more than full weight.
    """
    table = np.array([confidence.weights.get(name, 0.0) for name in EVENT_TYPES])
    weight = table[events.type_code]
    rating = events.type_code == _RATING
    weight[rating] = _rating_weight(events.value[rating], confidence, events)
    if confidence.half_life_days is not None:
        age_days = np.maximum(reference_time - events.occurred_at, 0.0) / _SECONDS_PER_DAY
        weight *= np.exp2(-age_days / confidence.half_life_days)
    return weight


def _rating_weight(
    values: np.ndarray, confidence: ConfidenceSettings, events: EventColumns
) -> np.ndarray:
    """What each rating weighs under the settings' mode (see ConfidenceSettings)."""
    if confidence.ratings == "scaled":
        scale = confidence.rating_scale or _largest_rating(events)
        return confidence.rating_weight * np.nan_to_num(values, nan=0.0) / scale
    stars = np.nan_to_num(values - confidence.rating_neutral, nan=0.0)
    if confidence.ratings == "above_neutral":
        stars = np.maximum(stars, 0.0)
    return confidence.rating_weight * stars


def _largest_rating(events: EventColumns) -> float:
    """The top of the log's rating scale as its data shows it (1.0 when there is none)."""
    values = events.value[events.type_code == _RATING]
    values = values[np.isfinite(values)]
    return float(values.max()) if len(values) and values.max() > 0 else 1.0


def scale_confidence(
    matrix: sp.csr_matrix,
    *,
    method: str = "none",
    alpha: float = 1.0,
    eps: float = 1.0,
    bm25_k1: float = BM25_K1,
    bm25_b: float = BM25_B,
) -> sp.csr_matrix:
    """Confidence as the model sees it (float32 CSR, same sparsity); applied before fit.

    "none": alpha * c (what implicit's own `alpha` does). "log": 1 + alpha * log1p(c / eps)
    (Hu, Koren & Volinsky 2008): every observed pair >= 1, heavy repeats compressed.
    "bm25": alpha * implicit's bm25_weight(K1, B) on the items x users matrix, as implicit's
    lastfm example does: idf down-weights very active users, length norm popular items.
    Signs are kept (a negative entry is a dislike); the scaling applies to |c|.
    """
    if method not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}")
    coo = sp.coo_matrix(matrix, dtype=np.float64)
    coo.sum_duplicates()
    magnitude, sign = np.abs(coo.data), np.sign(coo.data)
    if method == "none":
        data = alpha * coo.data
    elif method == "log":
        data = sign * (1.0 + alpha * np.log1p(magnitude / eps))
    else:
        from implicit.nearest_neighbours import bm25_weight  # implicit is heavy to import

        items_users = sp.coo_matrix((magnitude, (coo.col, coo.row)), shape=coo.shape[::-1])
        data = sign * alpha * bm25_weight(items_users, K1=bm25_k1, B=bm25_b).data
    # Built from (row, col) pairs, so explicit zeros (e.g. an idf of 0) keep their place.
    scaled = sp.csr_matrix((data, (coo.row, coo.col)), shape=coo.shape)
    return scaled.astype(np.float32)
