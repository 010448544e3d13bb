"""The values a Recommender takes and gives: requests, recent events, the catalogue, answers.

Plain frozen dataclasses with no numpy work beyond holding arrays, so routes, the batcher,
the recent-events store and the tradeoff lab's replay can build and read them without the
ranking code (online/recommender.py, which re-exports them).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from shared.confidence import TYPE_CODES

__all__ = [
    "SOURCES",
    "CatalogSnapshot",
    "RankedList",
    "RecentEvent",
    "UnknownItem",
    "UserRequest",
]

SOURCES = ("model", "realtime", "popular")


class UnknownItem(LookupError):
    """The item is not in this model version (new, or outside the training window)."""


@dataclass(frozen=True)
class RecentEvent:
    """An event newer than the model (or of a user it does not know), for fold-in."""

    item_id: str
    type: str
    value: float | None = None
    occurred_at: float = 0.0  # epoch seconds

    def __post_init__(self) -> None:
        """Refuse a type the confidence settings cannot weigh."""
        if self.type not in TYPE_CODES:
            raise ValueError(f"unknown event type {self.type!r}")


@dataclass(frozen=True)
class CatalogSnapshot:
    """The shop's catalogue at one moment, in any order: id -> category ("" = none), available."""

    item_ids: np.ndarray
    categories: np.ndarray
    available: np.ndarray

    def __post_init__(self) -> None:
        """Refuse columns of different lengths."""
        if not len(self.item_ids) == len(self.categories) == len(self.available):
            raise ValueError("CatalogSnapshot columns must all have the same length")

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str | None, bool]]) -> CatalogSnapshot:
        """From (item_id, category or None, available) rows, e.g. the items table."""
        ids, categories, available = [], [], []
        for item_id, category, is_available in rows:
            ids.append(item_id)
            categories.append(category or "")
            available.append(bool(is_available))
        return cls(
            np.array(ids, dtype=str), np.array(categories, dtype=str), np.array(available, bool)
        )


@dataclass(frozen=True)
class RankedList:
    """One answer: item ids best first, their scores, and where the ranking came from."""

    item_ids: list[str]
    scores: list[float]
    source: str  # "model" | "realtime" | "popular"
    filled_from_popular: int = 0  # trailing items ranked by popularity (all, for "popular")


@dataclass(frozen=True)
class UserRequest:
    """One user's request with its own options: what a shared batch (ranking.batching) holds."""

    user_id: str
    n: int
    exclude: Collection[str] = ()
    category: str | None = None
    include_seen: bool = False
    recent: Sequence[RecentEvent] = ()
