"""Pure: event columns -> a users x items confidence matrix with its id maps.

No I/O here: `offline.loading` fills `EventColumns` from PostgreSQL, tests build them by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from shared.settings import EVENT_TYPES

__all__ = [
    "EVENT_TYPES",
    "SCALINGS",
    "TYPE_CODES",
    "ConfidenceSettings",
    "EventColumns",
    "InteractionMatrix",
    "build_matrix",
    "event_confidence",
    "interactions",
    "scale_confidence",
]

TYPE_CODES: dict[str, int] = {name: code for code, name in enumerate(EVENT_TYPES)}
_RATING = TYPE_CODES["rating"]
_SECONDS_PER_DAY = 86_400.0
_NEGATIVE_RATINGS = ("ignore", "negative")
SCALINGS = ("none", "log", "bm25")


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


def _default_weights() -> dict[str, float]:
    return {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}


@dataclass(frozen=True)
class ConfidenceSettings:
    """How much one event says about a user's interest in an item; recorded in each manifest.

    Ratings: `rating_weight * (value - rating_neutral)`. With negative_ratings="ignore", ratings
    at or below neutral add nothing; with "negative" they subtract from the pair's sum, and a
    pair whose sum ends below zero reaches ALS as a dislike (implicit reads a negative entry as
    "not liked, with confidence |c|"). Other event types ignore `value` (e.g. a quantity).
    """

    weights: Mapping[str, float] = field(default_factory=_default_weights)
    rating_neutral: float = 3.0
    rating_weight: float = 2.0
    negative_ratings: str = "ignore"
    half_life_days: float | None = None  # None: no time decay

    def __post_init__(self) -> None:
        """Reject settings that would silently weigh events wrong."""
        unknown = set(self.weights) - set(EVENT_TYPES) - {"rating"}
        if unknown:
            raise ValueError(f"weights for unknown event types: {sorted(unknown)}")
        if "rating" in self.weights:
            raise ValueError("ratings are weighted by rating_weight and rating_neutral")
        if any(not np.isfinite(w) or w < 0 for w in self.weights.values()):
            raise ValueError("event weights must be finite and >= 0")
        if self.negative_ratings not in _NEGATIVE_RATINGS:
            raise ValueError(f"negative_ratings must be one of {_NEGATIVE_RATINGS}")
        if self.rating_weight < 0:
            raise ValueError("rating_weight must be >= 0")
        if self.half_life_days is not None and not self.half_life_days > 0:
            raise ValueError("half_life_days must be > 0 (or None for no decay)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for the run manifest."""
        return {**asdict(self), "weights": dict(self.weights)}


@dataclass(frozen=True)
class InteractionMatrix:
    """Summed confidence per (user, item), with the ids of its rows and columns."""

    matrix: sp.csr_matrix  # float32, users x items
    user_ids: np.ndarray  # row -> user id
    item_ids: np.ndarray  # column -> item id

    @property
    def shape(self) -> tuple[int, int]:
        """(users, items)."""
        return (len(self.user_ids), len(self.item_ids))


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
    stars = np.nan_to_num(events.value[rating] - confidence.rating_neutral, nan=0.0)
    if confidence.negative_ratings == "ignore":
        stars = np.maximum(stars, 0.0)
    weight[rating] = confidence.rating_weight * stars
    if confidence.half_life_days is not None:
        age_days = np.maximum(reference_time - events.occurred_at, 0.0) / _SECONDS_PER_DAY
        weight *= np.exp2(-age_days / confidence.half_life_days)
    return weight


def build_matrix(
    events: EventColumns,
    *,
    confidence: ConfidenceSettings,
    reference_time: float,
    min_user_events: int = 1,
    min_item_events: int = 1,
    user_ids: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
) -> InteractionMatrix:
    """Sum event confidence per (user, item) into a float32 CSR matrix.

    Only events that carry confidence count. Users (items) with fewer such events than the
    minimum are left out; the filter is applied once to the input counts, not iterated, so a
    kept user may lose events of a dropped item. Passing `user_ids` / `item_ids` fixes that
    axis (its minimum is then not applied) and drops events of ids outside it: that builds a
    test matrix aligned with a train matrix. Pairs whose signed sum is exactly 0 are dropped.
    """
    weight = event_confidence(events, confidence, reference_time=reference_time)
    live = weight != 0
    rows, row_ids = _axis(events.user_index, live, events.user_ids, user_ids, min_user_events)
    cols, col_ids = _axis(events.item_index, live, events.item_ids, item_ids, min_item_events)
    keep = live & (rows >= 0) & (cols >= 0)
    if not keep.all():
        weight, rows, cols = weight[keep], rows[keep], cols[keep]
    matrix = sp.csr_matrix((weight, (rows, cols)), shape=(len(row_ids), len(col_ids)))
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return InteractionMatrix(matrix.astype(np.float32), row_ids, col_ids)


def interactions(
    events: EventColumns, *, user_ids: np.ndarray, item_ids: np.ndarray
) -> sp.csr_matrix:
    """Binary users x items matrix of every event (any type, any weight) on fixed axes.

    "Seen" for serving: an item the user rated low or only viewed is still one they know,
    even when it carries no confidence for training.
    """
    rows = _positions(events.user_ids, np.asarray(user_ids))[events.user_index]
    cols = _positions(events.item_ids, np.asarray(item_ids))[events.item_index]
    keep = (rows >= 0) & (cols >= 0)
    matrix = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], cols[keep])),
        shape=(len(user_ids), len(item_ids)),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _axis(
    codes: np.ndarray,
    live: np.ndarray,
    dictionary: np.ndarray,
    space: np.ndarray | None,
    minimum: int,
) -> tuple[np.ndarray, np.ndarray]:
    """New index (-1 = dropped) of each event along one axis, and the ids of that axis."""
    if space is not None:
        return _positions(dictionary, space)[codes], np.asarray(space)
    counts = np.bincount(codes if live.all() else codes[live], minlength=len(dictionary))
    kept = counts >= max(minimum, 1)
    renumber = np.full(len(dictionary), -1, dtype=np.int32)
    renumber[kept] = np.arange(int(kept.sum()), dtype=np.int32)
    return renumber[codes], np.asarray(dictionary)[kept]


def _positions(dictionary: np.ndarray, space: np.ndarray) -> np.ndarray:
    """For each id of `dictionary`, its position in `space` (distinct ids), or -1."""
    # Imported here: the API imports this module for fold-in and never aligns axes, and
    # pyarrow would add ~27 MiB to every API worker.
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(pa.array(dictionary, type=pa.string()), pa.array(space, type=pa.string()))
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int32)


def scale_confidence(
    matrix: sp.csr_matrix,
    *,
    method: str = "none",
    alpha: float = 1.0,
    eps: float = 1.0,
    bm25_k1: float = 100.0,
    bm25_b: float = 0.8,
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
