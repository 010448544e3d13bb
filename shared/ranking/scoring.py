"""Scoring over one model version's arrays: id lookup, exact top-k, popularity walks, scopes.

Pure: arrays in, arrays out, no I/O (ModelArrays only checks and wraps an already loaded
version). The model's arrays are memory-mapped read-only and shared by every API
process, so nothing here writes to an input it did not allocate, and per-process copies are
limited to a few int/float arrays of one value per item.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from shared.artifacts import CorruptArtifact, LoadedVersion
from shared.model_spec import ModelParams
from shared.ranking.foldin import FoldInModel
from shared.ranking.topk import top_positions

__all__ = [
    "CatalogView",
    "IdIndex",
    "ModelArrays",
    "Scope",
    "catalog_view",
    "cosine_scores",
    "first_allowed",
    "item_item_scores",
    "positions_in",
    "rank_scored",
    "score_items",
]

_EMPTY = np.empty(0, dtype=np.int64)
_GATHER_BELOW = 0.25  # score only a category's rows when it holds under this share of items


class IdIndex:
    """Positions of string ids in a fixed-width unicode id array, by binary search.

    A dict of a million ids costs ~100 MB in every API process; this keeps nothing when the
    ids are sorted (build_matrix writes them sorted) and a sort permutation otherwise.
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        ordered = len(ids) < 2 or bool(np.all(ids[1:] >= ids[:-1]))
        self._order: np.ndarray | None = None if ordered else np.argsort(ids, kind="stable")

    def __len__(self) -> int:
        """Number of ids."""
        return len(self.ids)

    def find(self, ids: Iterable[str] | np.ndarray) -> np.ndarray:
        """Position of each id (int64), -1 for ids not in the index."""
        query = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=str)
        if len(self.ids) == 0 or query.size == 0:
            return np.full(query.shape, -1, dtype=np.int64)
        slot = np.searchsorted(self.ids, query, sorter=self._order)
        slot = np.minimum(slot, len(self.ids) - 1)
        position = slot if self._order is None else self._order[slot]
        return np.where(self.ids[position] == query, position, -1).astype(np.int64)

    def find_one(self, item: str) -> int:
        """Position of one id, or -1."""
        return int(self.find([item])[0])


@dataclass(frozen=True, eq=False)
class ModelArrays:
    """The version's arrays (read-only, memory-mapped) and what is derived from them once.

    Three kinds (shared.model_spec): "factors" (user and item factors, with the fold-in
    solve), "item_item" (an items x items matrix, sparse or dense; a user is their seen
    row), "popularity" (no model arrays: the ranking is the version's item popularity).
    """

    kind: str
    user_factors: np.ndarray  # users x f ("factors"); users x 0 otherwise
    item_factors: np.ndarray  # items x f ("factors"); items x 0 otherwise
    popularity: np.ndarray
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    users: IdIndex
    items: IdIndex
    norms: np.ndarray  # per item, over the columns similar() compares ("factors")
    foldin: FoldInModel | None  # "factors" only
    similarity: sp.csr_matrix | np.ndarray | None = None  # "item_item" only

    @classmethod
    def from_version(cls, loaded: LoadedVersion, params: ModelParams) -> ModelArrays:
        """Check the arrays fit together and derive what serving needs; CorruptArtifact if not."""
        arrays, path = loaded.arrays, loaded.path
        try:
            seen = loaded.csr("seen")
            user_ids, item_ids, popularity = (
                np.asarray(arrays[k]) for k in ("user_ids", "item_ids", "item_popularity")
            )
            n_users, n_items = len(user_ids), len(item_ids)
            if params.kind == "factors":
                users = np.asarray(arrays["user_factors"])
                items = np.asarray(arrays["item_factors"])
            else:
                users = np.zeros((n_users, 0), np.float32)
                items = np.zeros((n_items, 0), np.float32)
            similarity = _similarity(loaded) if params.kind == "item_item" else None
        except KeyError as exc:
            raise CorruptArtifact(path, f"model array missing: {exc}") from exc
        _check_shapes(path, users, items, (user_ids, item_ids, popularity), seen.shape)
        if similarity is not None and similarity.shape != (n_items, n_items):
            raise CorruptArtifact(path, "the item-item matrix does not match the items")
        if not np.isfinite(items).all():
            raise CorruptArtifact(path, "item factors hold NaN or infinity")
        foldin = FoldInModel.build(items, params) if params.kind == "factors" else None
        compared = items[:, :-1] if foldin is not None and foldin.bias_column else items
        # Plain ndarray views of the same read-only pages: np.memmap's Python-level indexing
        # hooks would cost more than the work on a small request.
        return cls(
            kind=params.kind,
            user_factors=users,
            item_factors=items,
            popularity=popularity,
            seen_indptr=np.asarray(seen.indptr),
            seen_indices=np.asarray(seen.indices),
            users=IdIndex(user_ids),
            items=IdIndex(item_ids),
            norms=np.linalg.norm(compared, axis=1).astype(np.float32),
            foldin=foldin,
            similarity=similarity,
        )

    @classmethod
    def popularity_only(cls, item_ids: np.ndarray, scores: np.ndarray) -> ModelArrays:
        """A popularity model held in memory (the API's answer before any version exists)."""
        n_items = len(item_ids)
        return cls(
            kind="popularity",
            user_factors=np.zeros((0, 0), np.float32),
            item_factors=np.zeros((n_items, 0), np.float32),
            popularity=np.asarray(scores, dtype=np.float32),
            seen_indptr=np.zeros(1, np.int64),
            seen_indices=_EMPTY,
            users=IdIndex(np.array([], dtype=str)),
            items=IdIndex(np.asarray(item_ids, dtype=str)),
            norms=np.zeros(n_items, np.float32),
            foldin=None,
        )

    def seen(self, row: int) -> np.ndarray:
        """Item rows the user interacted with in the training window."""
        if row < 0:
            return _EMPTY
        lo, hi = self.seen_indptr[row], self.seen_indptr[row + 1]
        return np.asarray(self.seen_indices[lo:hi], dtype=np.int64)

    def profile_scores(self, rows: np.ndarray, scope: Scope) -> np.ndarray:
        """An item-item model's scores of the scope's candidates for a user whose items are
        `rows` (each counting once): the sum of those rows of the matrix (float32, new)."""
        similarity = self.similarity
        assert similarity is not None, "profile_scores is for item-item versions"
        n_items = similarity.shape[1]
        if isinstance(similarity, sp.csr_matrix):
            csr = similarity
            spans = [np.arange(csr.indptr[r], csr.indptr[r + 1]) for r in rows]
            at = np.concatenate(spans) if spans else _EMPTY
            total = np.bincount(csr.indices[at], weights=csr.data[at], minlength=n_items)
        else:
            total = similarity[np.asarray(rows, dtype=np.int64)].sum(axis=0, dtype=np.float64)
        scores = np.asarray(total, dtype=np.float32)
        return scores if scope.candidates is None else scores[scope.candidates]

    def row_scores(self, row: int, scope: Scope) -> np.ndarray:
        """What an item-item model's row `row` says of each candidate (similar items)."""
        return self.profile_scores(np.array([row], dtype=np.int64), scope)


def _similarity(loaded: LoadedVersion) -> sp.csr_matrix | np.ndarray:
    """The item-item matrix: sparse neighbours (item-kNN) or dense weights (EASE)."""
    if "similarity_dense" in loaded.arrays:
        return np.asarray(loaded.arrays["similarity_dense"])
    return loaded.csr("similarity")


def _check_shapes(
    path: Path,
    users: np.ndarray,
    items: np.ndarray,
    id_arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    seen_shape: tuple[int, int],
) -> None:
    """Refuse factors, id maps, popularity and seen items that disagree on sizes."""
    user_ids, item_ids, popularity = id_arrays
    problems = [
        users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1],
        users.dtype != np.float32 or items.dtype != np.float32,
        len(user_ids) != len(users) or seen_shape[0] != len(users),
        len(item_ids) != len(items) or len(popularity) != len(items) or seen_shape[1] != len(items),
    ]
    if any(problems):
        raise CorruptArtifact(path, "factors, id maps, popularity and seen items disagree")


def positions_in(candidates: np.ndarray | None, items: np.ndarray) -> np.ndarray:
    """Where `items` sit in the sorted `candidates` (None: all items, position = item); absent
    items are dropped."""
    items = np.asarray(items, dtype=np.int64)
    if candidates is None or len(items) == 0:
        return items
    if len(candidates) == 0:
        return _EMPTY
    slot = np.minimum(np.searchsorted(candidates, items), len(candidates) - 1)
    return slot[candidates[slot] == items]


def first_allowed(order: np.ndarray, k: int, banned: np.ndarray) -> np.ndarray:
    """The first k entries of a precomputed ranking `order` that are not in `banned`.

    Each banned item removes at most one entry, so looking at k + len(banned) entries is enough.
    """
    if k <= 0:
        return _EMPTY
    head = order[: k + len(banned)]
    return head[~np.isin(head, banned)][:k].astype(np.int64)


def cosine_scores(scores: np.ndarray, norms: np.ndarray, query_norm: float) -> np.ndarray:
    """Dot products -> cosine similarity, in place on `scores` (which the caller allocated).

    Items with a zero vector get 0: no direction, so no similarity either way.
    """
    denominator = norms * np.float32(query_norm)
    np.divide(scores, denominator, out=scores, where=denominator > 0)
    scores[denominator <= 0] = 0.0
    return scores


@dataclass(frozen=True)
class Scope:
    """Which items a request may return, precomputed per catalogue (and per category)."""

    candidates: np.ndarray | None  # sorted item rows to score; None: every item
    unavailable: np.ndarray  # rows to mask when candidates is None (sorted)
    popular: np.ndarray  # every eligible row, most popular first (ties: lower row first)


@dataclass(frozen=True)
class CatalogView:
    """The catalogue aligned to one model's item rows: the scope of each category."""

    everything: Scope
    categories: Mapping[str, Scope]
    codes: np.ndarray = field(default_factory=lambda: _EMPTY)  # per item row; -1: none
    names: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))

    def scope(self, category: str | None) -> Scope:
        """Items a request may return; an unknown or empty category holds none."""
        if category is None:
            return self.everything
        return self.categories.get(category, _NOTHING)

    def category_of(self, row: int) -> str | None:
        """The catalogue category of one item row, None when it has none."""
        if row >= len(self.codes) or self.codes[row] < 0:
            return None
        return str(self.names[self.codes[row]])


_NOTHING = Scope(candidates=_EMPTY, unavailable=_EMPTY, popular=_EMPTY)


def catalog_view(
    rows: np.ndarray, categories: np.ndarray, available: np.ndarray, popularity: np.ndarray
) -> CatalogView:
    """Align catalogue entries (their model row, -1 if unknown; category, "" if none;
    availability) to the model's items. Items missing from the catalogue count as available
    with no category; for an id listed twice the last entry wins."""
    n_items = len(popularity)
    known = rows >= 0
    is_available = np.ones(n_items, dtype=bool)
    is_available[rows[known]] = np.asarray(available, dtype=bool)[known]
    names, codes = np.unique(np.asarray(categories, dtype=str)[known], return_inverse=True)
    code = np.full(n_items, -1, dtype=np.int64)
    code[rows[known]] = codes.reshape(-1)
    code[np.isin(code, np.flatnonzero(names == ""))] = -1  # no category: matches no filter
    eligible = np.flatnonzero(is_available)
    everything = Scope(None, np.flatnonzero(~is_available), _by_popularity(eligible, popularity))
    scopes = _category_scopes(eligible, code, names, popularity)
    return CatalogView(everything, scopes, code, names)


def _by_popularity(rows: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """`rows` (ascending) reordered most popular first; a stable sort keeps ties by row."""
    return rows[np.argsort(-popularity[rows], kind="stable")].astype(np.int64)


def _category_scopes(
    eligible: np.ndarray, code: np.ndarray, names: np.ndarray, popularity: np.ndarray
) -> dict[str, Scope]:
    """One scope per category, grouping the eligible rows by category code in O(n log n)."""
    rows = eligible[code[eligible] >= 0]
    codes = code[rows]
    counts = np.bincount(codes, minlength=len(names))
    ends = np.cumsum(counts)
    by_row = np.split(rows[np.argsort(codes, kind="stable")], ends[:-1])
    by_pop = np.split(rows[np.lexsort((rows, -popularity[rows], codes))], ends[:-1])
    return {
        str(names[k]): Scope(by_row[k].astype(np.int64), _EMPTY, by_pop[k].astype(np.int64))
        for k in np.flatnonzero(counts)
    }


def score_items(vectors: np.ndarray, factors: np.ndarray, scope: Scope) -> np.ndarray:
    """Exact scores, queries x the scope's candidates (float32, a new writable array).

    `factors` is only read. A small category gathers its own rows instead of scanning all.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    candidates = scope.candidates
    if candidates is None:
        return vectors @ factors.T
    if len(candidates) < _GATHER_BELOW * len(factors):
        return vectors @ factors[candidates].T
    return (vectors @ factors.T)[:, candidates]


def rank_scored(
    scores: np.ndarray, scope: Scope, banned: np.ndarray, n: int, *, floor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(model rows, their scores, popular rows to fill): at most n rows in all, none banned.

    The model's part holds the best-scored eligible items above `floor`; popular eligible
    items fill the rest. `scores` (the scope's candidates) is overwritten with the masks.
    """
    scores[positions_in(scope.candidates, banned)] = -np.inf
    if scope.candidates is None:
        scores[scope.unavailable] = -np.inf
    top = top_positions(scores, n, floor=floor)
    rows = top if scope.candidates is None else scope.candidates[top]
    fill = first_allowed(scope.popular, n - len(rows), np.concatenate([banned, rows]))
    return rows, scores[top], fill


def item_item_scores(
    user_rows: sp.csr_matrix, similarity: sp.csr_matrix | np.ndarray
) -> np.ndarray:
    """Dense float32 scores (n_rows x n_items) = user_rows @ similarity, sparse or dense.

    Seen items are not masked here: callers filter what a user already has.
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square item x item matrix, got {similarity.shape}")
    if user_rows.shape[1] != similarity.shape[0]:
        raise ValueError(
            f"user_rows has {user_rows.shape[1]} item columns, similarity {similarity.shape[0]}"
        )
    rows = sp.csr_matrix(user_rows, dtype=np.float32)
    if sp.issparse(similarity):
        product = rows @ sp.csr_matrix(similarity, dtype=np.float32)
        return np.asarray(product.toarray(), dtype=np.float32)
    return np.asarray(rows @ np.asarray(similarity, dtype=np.float32), dtype=np.float32)
