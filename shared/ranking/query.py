"""Resolve one user's request against a model version: which vector to score with, and what
never to show them (seen, recent and excluded items).

A trained vector already holds the events up to `trained_until`, so only newer events are
folded in; an unknown user's events all count (training filters may have left them out).
Pure: arrays in, a `Query` out, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from shared.confidence import ConfidenceSettings
from shared.ranking.foldin import event_raw_confidence, fold_in_events, seen_raw_confidence
from shared.ranking.scoring import ModelArrays
from shared.ranking.values import RecentEvent

__all__ = ["NO_ITEMS", "Query", "UserQueries"]

NO_ITEMS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class Query:
    """One resolved request: what to score with and what to ban. A factor model scores a
    `vector`, an item-item model a `profile` (the user's item rows); neither: popularity."""

    vector: np.ndarray | None
    banned: np.ndarray  # item rows never to return
    source: str
    # The user's row when a precomputed list may answer: their trained vector, none of
    # their newer events folded in, and their seen items banned. -1 otherwise.
    lookup_row: int = -1
    profile: np.ndarray | None = None

    @property
    def personal(self) -> bool:
        """Whether the model scores this query (otherwise it is answered by popularity)."""
        return self.vector is not None or self.profile is not None


@dataclass(frozen=True, eq=False)
class UserQueries:
    """Turns (user, recent events, options) into a Query for one model version."""

    model: ModelArrays
    confidence: ConfidenceSettings
    trained_until: float  # epoch s: events after this are news to the model

    def for_user(
        self,
        user_id: str,
        recent: Sequence[RecentEvent],
        *,
        excluded: np.ndarray,
        include_seen: bool,
    ) -> Query:
        """The user's vector and the items to ban for them: seen, recent and excluded ones."""
        row = self.model.users.find_one(user_id)
        seen = self.model.seen(row)
        event_rows = self.model.items.find([e.item_id for e in recent])
        query = self._vector(row, seen, event_rows, recent)
        if query.source == "model" and (not include_seen or len(seen) == 0):
            query = replace(query, lookup_row=row)
        if not include_seen:
            touched = np.union1d(seen, event_rows[event_rows >= 0])
            return replace(query, banned=np.union1d(excluded, touched))
        return replace(query, banned=excluded)

    def vector_of(self, user_id: str, recent: Sequence[RecentEvent]) -> Query:
        """The query recommend() would score the user with, before any ban."""
        row = self.model.users.find_one(user_id)
        event_rows = self.model.items.find([e.item_id for e in recent])
        return self._vector(row, self.model.seen(row), event_rows, recent)

    def _vector(
        self, row: int, seen: np.ndarray, event_rows: np.ndarray, recent: Sequence[RecentEvent]
    ) -> Query:
        """Trained vector ("model"), folded in ("realtime") or none ("popular"); nothing banned."""
        if self.model.kind == "popularity":
            return Query(None, NO_ITEMS, "popular")
        if self.model.kind == "item_item":
            return _profile(row, seen, event_rows)
        known = event_rows >= 0
        if row >= 0:
            known &= np.array([e.occurred_at for e in recent]) > self.trained_until
        if known.any():
            events = [e for e, keep in zip(recent, known, strict=True) if keep]
            vector = self._fold_in(row, seen, event_rows[known], events)
            if vector is not None:
                return Query(vector, NO_ITEMS, "realtime")
        if row >= 0:
            trained = np.asarray(self.model.user_factors[row])
            if np.isfinite(trained).all():
                return Query(trained, NO_ITEMS, "model")
        return Query(None, NO_ITEMS, "popular")

    def _fold_in(
        self, row: int, seen: np.ndarray, rows: np.ndarray, events: list[RecentEvent]
    ) -> np.ndarray | None:
        """The vector after `events` on item `rows`; None if they carry no usable signal."""
        reference = max(self.trained_until, max(e.occurred_at for e in events))
        assert self.model.foldin is not None, "fold-in solves for factor models only"
        return fold_in_events(
            self.model.foldin,
            seen=seen,
            rows=rows,
            raw=event_raw_confidence(
                [e.type for e in events],
                [e.value for e in events],
                [e.occurred_at for e in events],
                self.confidence,
                reference_time=reference,
            ),
            seen_raw=seen_raw_confidence(self.confidence),
            trained=self.model.user_factors[row] if row >= 0 else None,
        )


def _profile(row: int, seen: np.ndarray, event_rows: np.ndarray) -> Query:
    """An item-item model's user: the items they touched, the newest events included by
    construction ("realtime" when those add an item the version had not seen them touch)."""
    touched = np.union1d(seen, event_rows[event_rows >= 0]).astype(np.int64)
    if len(touched) == 0:
        return Query(None, NO_ITEMS, "popular")
    source = "model" if len(touched) == len(seen) else "realtime"
    return Query(None, NO_ITEMS, source, profile=touched)
