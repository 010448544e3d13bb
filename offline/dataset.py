"""Pure: event columns -> a users x items confidence matrix with its id maps.

No I/O here: `offline.loading` fills `EventColumns` from PostgreSQL, tests build them by hand.
How one event weighs lives in `shared.confidence`, which the API's fold-in shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from shared.confidence import ConfidenceSettings, EventColumns, event_confidence

__all__ = ["InteractionMatrix", "build_matrix", "interactions"]


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
    rows = positions(events.user_ids, np.asarray(user_ids))[events.user_index]
    cols = positions(events.item_ids, np.asarray(item_ids))[events.item_index]
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
        return positions(dictionary, space)[codes], np.asarray(space)
    counts = np.bincount(codes if live.all() else codes[live], minlength=len(dictionary))
    kept = counts >= max(minimum, 1)
    renumber = np.full(len(dictionary), -1, dtype=np.int32)
    renumber[kept] = np.arange(int(kept.sum()), dtype=np.int32)
    return renumber[codes], np.asarray(dictionary)[kept]


def positions(dictionary: np.ndarray, space: np.ndarray) -> np.ndarray:
    """For each id of `dictionary`, its position in `space` (distinct ids), or -1."""
    # Imported here: the API imports this module for fold-in and never aligns axes, and
    # pyarrow would add ~27 MiB to every API worker.
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(pa.array(dictionary, type=pa.string()), pa.array(space, type=pa.string()))
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int32)
