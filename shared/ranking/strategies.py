"""How one version ranks a user's items: the serving strategy its manifest names.

Every strategy ends in the same ranking rules (shared.ranking.scoring.rank_scored's): a strategy
may only *shortlist* the model's part of a list, and says "I cannot" (None) whenever its
shortlist might differ from the exact answer's rules (too few survivors of the filters), so
the Recommender then scores exactly. What each one keeps in memory:

- exact, batched: nothing beyond the memory-mapped item factors (batching lives in
  shared.ranking.batching; one process scans once per batch instead of once per request).
- precomputed: the int32/float32 lookup tables, memory-mapped and shared by processes.
- float16: the half-precision factors, memory-mapped and shared. numpy has no fast float16
  product: on the 100k x 64 benchmark model (one core, numpy 2.4) `v @ Y16.T` took 25 ms,
  the same with numpy's implicit promotion 18 ms, converting 4,096 rows at a time into a
  float32 buffer then a BLAS product 11 ms, against 1.1 ms for float32. Block conversion is
  the fastest exact choice; it halves the bytes on disk and in the page cache, not the time.
- ann: the faiss HNSW index, deserialized into each API process (its own copy, about the
  item factors' size plus 8 bytes x ann_m per item); faiss runs on one thread there, the
  process's parallelism being its concurrent requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, cast

import numpy as np

from shared.artifacts import CorruptArtifact, LoadedVersion
from shared.ranking.scoring import Scope, score_items
from shared.ranking.topk import top_k
from shared.serving_strategy import ServingStrategy

__all__ = ["AnnIndex", "Ask", "ServingPlan", "ann_recall", "eligible", "score_half"]

_BLOCK_ROWS = 4096  # float16 rows converted at a time: 1 MiB of float32 at 64 factors
_GATHER_BELOW = 0.25  # as scoring.score_items: a small category is cheap to score exactly
_ANN_MARGIN = 16  # extra candidates asked of the index beyond n + banned items


class Ask(Protocol):
    """What a strategy needs of one query with a vector (the Recommender's _Query)."""

    @property
    def vector(self) -> np.ndarray | None: ...

    @property
    def banned(self) -> np.ndarray: ...

    @property
    def lookup_row(self) -> int: ...


Shortlist = tuple[np.ndarray, np.ndarray] | None  # (item rows, scores) best first, or None


def _member(sorted_values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Whether each of `rows` is in the ascending array `sorted_values`."""
    if len(sorted_values) == 0:
        return np.zeros(len(rows), dtype=bool)
    slot = np.minimum(np.searchsorted(sorted_values, rows), len(sorted_values) - 1)
    return np.asarray(sorted_values[slot] == rows)


def eligible(rows: np.ndarray, scope: Scope, banned: np.ndarray) -> np.ndarray:
    """Which item rows a request may return: in scope, available, not banned (sorted)."""
    ok = ~_member(banned, rows)
    if scope.candidates is None:
        return ok & ~_member(scope.unavailable, rows)
    return ok & _member(scope.candidates, rows)


def score_half(vectors: np.ndarray, factors16: np.ndarray, scope: Scope) -> np.ndarray:
    """score_items over float16 factors, converted to float32 a block at a time (see above)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    candidates = scope.candidates
    if candidates is not None and len(candidates) < _GATHER_BELOW * len(factors16):
        return vectors @ factors16[candidates].astype(np.float32).T
    out = np.empty((len(vectors), len(factors16)), dtype=np.float32)
    buffer = np.empty((min(_BLOCK_ROWS, len(factors16)), factors16.shape[1]), dtype=np.float32)
    for lo in range(0, len(factors16), _BLOCK_ROWS):
        block = buffer[: min(_BLOCK_ROWS, len(factors16) - lo)]
        np.copyto(block, factors16[lo : lo + len(block)])
        np.matmul(vectors, block.T, out=out[:, lo : lo + len(block)])
    return out if candidates is None else out[:, candidates]


class AnnIndex:
    """A faiss HNSW inner-product index over item rows, private to this process."""

    def __init__(self, serialized: np.ndarray, *, ef_search: int) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        self._index: Any = cast(Any, faiss.deserialize_index(np.ascontiguousarray(serialized)))
        self._index.hnsw.efSearch = ef_search

    @property
    def size(self) -> int:
        """Items in the index."""
        return int(self._index.ntotal)

    def search(self, vectors: np.ndarray, k: int) -> np.ndarray:
        """Item rows of each vector's (approximate) k best, best first; -1 pads."""
        k = max(1, min(k, self.size))
        _, labels = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        return np.asarray(labels, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class ServingPlan:
    """A version's strategy and the arrays it serves from (see the module docstring)."""

    strategy: ServingStrategy
    lookup_users: np.ndarray | None = None  # precomputed: sorted user rows
    lookup_items: np.ndarray | None = None  # users x N item rows, -1 padded
    lookup_scores: np.ndarray | None = None
    factors16: np.ndarray | None = None
    ann: AnnIndex | None = None

    @classmethod
    def from_version(cls, loaded: LoadedVersion, *, n_users: int, n_items: int) -> ServingPlan:
        """The manifest's strategy (exact when it names none); CorruptArtifact if its
        arrays are missing or do not fit the model."""
        try:
            strategy = _strategy(loaded.manifest.serving)
            return _plan(strategy, loaded.arrays, n_users=n_users, n_items=n_items)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CorruptArtifact(loaded.path, f"serving strategy unusable: {exc}") from exc

    def score(self, vectors: np.ndarray, item_factors: np.ndarray, scope: Scope) -> np.ndarray:
        """Full scores of the scope's candidates (float16 factors when the plan has them)."""
        if self.factors16 is not None:
            return score_half(vectors, self.factors16, scope)
        return score_items(vectors, item_factors, scope)

    def shortlist(
        self,
        asks: Sequence[Ask],
        *,
        item_factors: np.ndarray,
        scope: Scope,
        ns: Sequence[int],
        floor: float,
    ) -> list[Shortlist]:
        """The model's part of each list without a full scan, or None where only a full
        scan gives the ranking rules' answer."""
        if self.lookup_items is not None:
            return [self._lookup(a, scope, n, floor) for a, n in zip(asks, ns, strict=True)]
        if self.ann is not None:
            return self._ann(asks, item_factors, scope, ns, floor)
        return [None] * len(asks)

    def _lookup(self, ask: Ask, scope: Scope, n: int, floor: float) -> Shortlist:
        """The precomputed list filtered by the request; exact whenever it can be trusted:
        n survivors, or a list that already holds every item above the floor."""
        assert self.lookup_users is not None
        assert self.lookup_items is not None
        assert self.lookup_scores is not None
        at = int(np.searchsorted(self.lookup_users, ask.lookup_row))
        if ask.lookup_row < 0 or at >= len(self.lookup_users):
            return None
        if self.lookup_users[at] != ask.lookup_row:
            return None
        items = np.asarray(self.lookup_items[at], dtype=np.int64)
        scores = np.asarray(self.lookup_scores[at])
        complete = bool(items[-1] < 0 or scores[-1] <= floor)
        keep = (items >= 0) & (scores > floor)
        keep[keep] = eligible(items[keep], scope, ask.banned)
        rows, kept = items[keep][:n], scores[keep][:n]
        return (rows, kept) if len(rows) == n or complete else None

    def _ann(
        self,
        asks: Sequence[Ask],
        item_factors: np.ndarray,
        scope: Scope,
        ns: Sequence[int],
        floor: float,
    ) -> list[Shortlist]:
        """One index search for the batch, then the rules on exactly rescored candidates;
        None where fewer than n survive (or a small category: exact is cheap there)."""
        assert self.ann is not None
        n_items = len(item_factors)
        share = 1.0 if scope.candidates is None else len(scope.candidates) / max(n_items, 1)
        if share < _GATHER_BELOW or not asks:
            return [None] * len(asks)
        wants = [
            int((n + _ANN_MARGIN + len(a.banned)) / share) for a, n in zip(asks, ns, strict=True)
        ]
        labels = self.ann.search(np.stack([_vector(a) for a in asks]), max(wants))
        answers: list[Shortlist] = []
        for ask, n, want, found in zip(asks, ns, wants, labels, strict=True):
            rows = found[:want]
            rows = np.unique(rows[rows >= 0])
            rows = rows[eligible(rows, scope, ask.banned)]
            scores = item_factors[rows] @ _vector(ask)
            order = np.lexsort((rows, -scores))
            order = order[scores[order] > floor][:n]
            answers.append((rows[order], scores[order]) if len(order) == n else None)
        return answers


def _vector(ask: Ask) -> np.ndarray:
    assert ask.vector is not None
    return np.asarray(ask.vector, dtype=np.float32)


def _strategy(raw: dict[str, Any]) -> ServingStrategy:
    """The manifest's strategy; knobs this code does not know are ignored (newer writers)."""
    known = {f.name for f in fields(ServingStrategy)}
    return ServingStrategy.from_dict({k: v for k, v in raw.items() if k in known})


def _plan(strategy: ServingStrategy, arrays: Any, *, n_users: int, n_items: int) -> ServingPlan:
    """Check and wrap the strategy's arrays (KeyError/ValueError when they do not fit)."""
    if strategy.name == "precomputed":
        users, items = arrays["precomputed_users"], arrays["precomputed_items"]
        scores = arrays["precomputed_scores"]
        if items.ndim != 2 or items.shape != scores.shape or len(users) != len(items):
            raise ValueError("precomputed users, items and scores disagree")
        if items.shape[1] == 0 or (len(users) and (users.min() < 0 or users.max() >= n_users)):
            raise ValueError("precomputed lists are empty or name unknown users")
        if len(users) > 1 and not np.all(np.diff(users) > 0):
            raise ValueError("precomputed users are not sorted")
        if items.size and items.max() >= n_items:
            raise ValueError("precomputed lists name unknown items")
        return ServingPlan(strategy, np.asarray(users), np.asarray(items), np.asarray(scores))
    if strategy.name == "float16":
        half = np.asarray(arrays["item_factors_f16"])
        if half.dtype != np.float16 or half.ndim != 2 or len(half) != n_items:
            raise ValueError("item_factors_f16 does not match the item factors")
        return ServingPlan(strategy, factors16=half)
    if strategy.name == "ann":
        index = AnnIndex(arrays["ann_index"], ef_search=strategy.ann_ef_search)
        if index.size != n_items:
            raise ValueError(f"the ANN index holds {index.size} items, not {n_items}")
        return ServingPlan(strategy, ann=index)
    return ServingPlan(strategy)


def ann_recall(
    index: AnnIndex,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    *,
    k: int = 10,
    sample: int = 1000,
    random_state: int = 0,
) -> float:
    """Mean share of each sampled user's exact top-k (all items, nothing filtered) that the
    index's top-k finds: the index's own quality, before any request rule. NaN with no
    usable user."""
    usable = np.flatnonzero(np.isfinite(user_factors).all(axis=1))
    if len(usable) == 0 or len(item_factors) == 0:
        return float("nan")
    rng = np.random.default_rng(random_state)
    users = np.sort(rng.choice(usable, size=min(sample, len(usable)), replace=False))
    k = min(k, len(item_factors))
    exact, _ = top_k(user_factors, item_factors, users, k=k)
    found = index.search(np.asarray(user_factors[users]), k)
    hits = sum(len(np.intersect1d(e, f[f >= 0])) for e, f in zip(exact, found, strict=True))
    return hits / (k * len(users))
