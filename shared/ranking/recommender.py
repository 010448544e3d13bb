"""An immutable recommender over one published model version: recommend, similar, popular.

Built once per promoted version (the reloader swaps the reference) and doing no I/O after
`load`. The version's arrays stay memory-mapped read-only, shared by every API process
through the page cache; each process adds only Y^T Y (f x f), one norm and a few int rows per
item (popularity order, catalogue scopes), and nothing per user.

Ranking: exact dot products of the user's vector with every item factor, banned items masked,
shared.ranking.topk.top_positions for the top n. The model's part of a list stops where its
evidence does (ALS: score <= 0, a predicted preference no better than an untouched item's;
similar(): cosine <= 0); the rest comes from the most popular eligible items, so a list has
exactly n items whenever n eligible ones exist. The last `filled_from_popular` items of a
list are ranked by popularity and their score is their popularity (users in the training
window).

The version's serving strategy (shared.ranking.strategies, from its manifest) may shortlist the
model's part instead of a full scan (a precomputed list, an ANN search) or scan float16
factors; the rules above hold for every strategy, which falls back to the exact scan
whenever its shortlist cannot honour them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shared.artifacts import ArtifactManifest, CorruptArtifact, read_version
from shared.confidence import ConfidenceSettings
from shared.model_spec import ModelParams
from shared.ranking.query import NO_ITEMS, Query, UserQueries
from shared.ranking.scoring import (
    CatalogView,
    ModelArrays,
    Scope,
    catalog_view,
    cosine_scores,
    first_allowed,
    rank_scored,
    score_items,
)
from shared.ranking.strategies import ServingPlan, ann_recall
from shared.ranking.values import (
    SOURCES,
    CatalogSnapshot,
    RankedList,
    RecentEvent,
    UnknownItem,
    UserRequest,
)
from shared.serving_strategy import ServingStrategy

__all__ = [
    "FALLBACK_VERSION",
    "SOURCES",
    "CatalogSnapshot",
    "RankedList",
    "RecentEvent",
    "Recommender",
    "UnknownItem",
    "UserRequest",
]

FALLBACK_VERSION = "fallback-popular"  # the in-memory popularity before any version
_SCORE_BUDGET = 1 << 22  # floats of scores per batch chunk (16 MiB)


@dataclass(frozen=True, eq=False, repr=False)
class Recommender:
    """Immutable: answers from one model version; `with_catalog` makes a new one cheaply."""

    version: str
    manifest: ArtifactManifest
    created_at: datetime
    params: ModelParams
    confidence: ConfidenceSettings
    trained_until: float  # epoch s: events after this are news to the model
    _model: ModelArrays = field(repr=False)
    _queries: UserQueries = field(repr=False)
    _catalog: CatalogView = field(repr=False)
    _serving: ServingPlan = field(repr=False)

    @classmethod
    def load(
        cls, path: Path, *, catalog: CatalogSnapshot | None = None, verify: bool = True
    ) -> Recommender:
        """Memory-map and check one version; CorruptArtifact when it cannot be trusted."""
        loaded = read_version(path, mmap=True, verify=verify)
        manifest = loaded.manifest
        try:
            params = ModelParams.from_dict({**manifest.params, "algorithm": manifest.algorithm})
            confidence = _confidence_settings(manifest)
            created_at = datetime.fromisoformat(manifest.created_at)
            trained_until = _trained_until(manifest, created_at)
        except (TypeError, ValueError) as exc:
            raise CorruptArtifact(path, f"manifest settings unusable: {exc}") from exc
        model = ModelArrays.from_version(loaded, params)
        serving = ServingPlan.from_version(
            loaded, n_users=len(model.users), n_items=len(model.items)
        )
        empty = CatalogSnapshot(np.array([], str), np.array([], str), np.array([], bool))
        return cls(
            version=manifest.version,
            manifest=manifest,
            created_at=created_at,
            params=params,
            confidence=confidence,
            trained_until=trained_until,
            _model=model,
            _queries=UserQueries(model, confidence, trained_until),
            _catalog=_align(catalog or empty, model),
            _serving=serving,
        )

    @classmethod
    def popular_only(
        cls,
        item_ids: np.ndarray,
        scores: np.ndarray,
        *,
        catalog: CatalogSnapshot,
        version: str = FALLBACK_VERSION,
    ) -> Recommender:
        """A popularity "version" held in memory, answering before any version is published.

        Its items are the scored ones and every catalogue item (those score 0), so `similar`
        knows any catalogued item and answers with the popular items of its category.
        """
        extra = np.setdiff1d(np.asarray(catalog.item_ids, dtype=str), np.asarray(item_ids, str))
        ids = np.concatenate([np.asarray(item_ids, dtype=str), extra])
        order = np.argsort(ids, kind="stable")  # sorted ids: IdIndex needs no permutation
        values = np.concatenate([np.asarray(scores, np.float32), np.zeros(len(extra), np.float32)])
        model = ModelArrays.popularity_only(ids[order], values[order])
        now = datetime.now(UTC)
        params = ModelParams(algorithm="popularity")
        manifest = ArtifactManifest(
            version=version,
            created_at=now.isoformat(),
            algorithm="popularity",
            params=params.to_dict(),
            data={"source": "the event log (no version published yet)"},
            metrics={},
            cost={},
            arrays={},
        )
        confidence = ConfidenceSettings()
        return cls(
            version=version,
            manifest=manifest,
            created_at=now,
            params=params,
            confidence=confidence,
            trained_until=now.timestamp(),
            _model=model,
            _queries=UserQueries(model, confidence, now.timestamp()),
            _catalog=_align(catalog, model),
            _serving=ServingPlan(ServingStrategy()),
        )

    @property
    def is_fallback(self) -> bool:
        """Whether this answers from the event log because no version is published yet."""
        return self.version == FALLBACK_VERSION

    def with_catalog(self, catalog: CatalogSnapshot) -> Recommender:
        """The same model with a refreshed catalogue; the factors are not reloaded."""
        return replace(self, _catalog=_align(catalog, self._model))

    def __repr__(self) -> str:
        """Version and size, not the arrays."""
        m = self._model
        return f"Recommender(version={self.version!r}, users={len(m.users)}, items={len(m.items)})"

    @property
    def n_users(self) -> int:
        """Users with a trained vector."""
        return len(self._model.users)

    @property
    def n_items(self) -> int:
        """Items the model can rank."""
        return len(self._model.items)

    @property
    def serving(self) -> ServingStrategy:
        """How this version ranks user recommendations (its manifest's strategy)."""
        return self._serving.strategy

    def ann_recall(self, *, k: int = 10, sample: int = 1000, random_state: int = 0) -> float:
        """Recall@k of the ANN index against exact scoring (strategies.ann_recall); ValueError
        when this version has no index."""
        if self._serving.ann is None:
            raise ValueError(f"version {self.version} serves {self.serving.name!r}, not 'ann'")
        m = self._model
        return ann_recall(
            self._serving.ann,
            m.user_factors,
            m.item_factors,
            k=k,
            sample=sample,
            random_state=random_state,
        )

    def knows_user(self, user_id: str) -> bool:
        """Whether the user has a trained vector in this version."""
        return self._model.users.find_one(user_id) >= 0

    def recommend(
        self,
        user_id: str,
        *,
        n: int,
        exclude: Collection[str] = (),
        category: str | None = None,
        include_seen: bool = False,
        recent: Sequence[RecentEvent] = (),
    ) -> RankedList:
        """The user's top n; `recent` events newer than the model are folded into their vector."""
        return self.recommend_many(
            [user_id],
            n=n,
            exclude=exclude,
            category=category,
            include_seen=include_seen,
            recent={user_id: recent},
        )[0]

    def recommend_many(
        self,
        user_ids: Sequence[str],
        *,
        n: int,
        exclude: Collection[str] = (),
        category: str | None = None,
        include_seen: bool = False,
        recent: Mapping[str, Sequence[RecentEvent]] | None = None,
    ) -> list[RankedList]:
        """recommend() for each user (same options), scored with one matrix product per chunk."""
        _check_n(n)
        excluded = self._rows(exclude)
        queries = [
            self._queries.for_user(
                user, (recent or {}).get(user, ()), excluded=excluded, include_seen=include_seen
            )
            for user in user_ids
        ]
        return self._rank(queries, scope=self._catalog.scope(category), ns=[n] * len(queries))

    def recommend_requests(self, requests: Sequence[UserRequest]) -> list[RankedList]:
        """recommend() for requests with their own options; those of one category share
        each scan of the item factors (the batched strategy's path)."""
        for request in requests:
            _check_n(request.n)
        answers: dict[int, RankedList] = {}
        groups: dict[str | None, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.category, []).append(i)
        for category, members in groups.items():
            queries = [
                self._queries.for_user(
                    requests[i].user_id,
                    requests[i].recent,
                    excluded=self._rows(requests[i].exclude),
                    include_seen=requests[i].include_seen,
                )
                for i in members
            ]
            ranked = self._rank(
                queries, scope=self._catalog.scope(category), ns=[requests[i].n for i in members]
            )
            answers.update(zip(members, ranked, strict=True))
        return [answers[i] for i in range(len(requests))]

    def similar(
        self, item_id: str, *, n: int, exclude: Collection[str] = (), category: str | None = None
    ) -> RankedList:
        """Items like this one: factors pointing the same way (cosine), an item-item model's
        row, or for a popularity version the popular items of its category; UnknownItem if
        the model lacks it."""
        _check_n(n)
        row = self._model.items.find_one(item_id)
        if row < 0:
            raise UnknownItem(item_id)
        banned = np.union1d(self._rows(exclude), [row])
        if self._model.kind == "popularity":
            own = category if category is not None else self._catalog.category_of(row)
            return self._popular_list(self._catalog.scope(own), banned, n)
        scope = self._catalog.scope(category)
        if self._model.kind == "item_item":
            scores = self._model.row_scores(row, scope)
            return self._model_list(scores, Query(None, banned, "model"), scope, n, floor=0.0)
        assert self._model.foldin is not None
        vector = np.array(self._model.item_factors[row], dtype=np.float32)
        if self._model.foldin.bias_column:
            vector[-1] = 0.0  # compare BPR items by their factors, not their popularity bias
        if not self._model.norms[row] > 0:
            return self._popular_list(scope, banned, n)
        scores = score_items(vector[None, :], self._model.item_factors, scope)[0]
        norms = (
            self._model.norms if scope.candidates is None else self._model.norms[scope.candidates]
        )
        cosine_scores(scores, norms, float(self._model.norms[row]))
        return self._model_list(scores, Query(vector, banned, "model"), scope, n, floor=0.0)

    def popular(
        self, *, n: int, exclude: Collection[str] = (), category: str | None = None
    ) -> RankedList:
        """The most popular eligible items (users who interacted in the training window)."""
        _check_n(n)
        return self._popular_list(self._catalog.scope(category), self._rows(exclude), n)

    # -- resolving a request ------------------------------------------------------------------

    def _rows(self, item_ids: Collection[str]) -> np.ndarray:
        """Item rows of the ids the model knows (others cannot be recommended anyway)."""
        if len(item_ids) == 0:
            return NO_ITEMS
        rows = self._model.items.find(item_ids)
        return np.unique(rows[rows >= 0])

    def user_vector(
        self, user_id: str, *, recent: Sequence[RecentEvent] = ()
    ) -> tuple[np.ndarray | None, str]:
        """The vector recommend() scores the user with, and its source (None for "popular",
        and for item-item and popularity versions, which score no vector)."""
        query = self._queries.vector_of(user_id, recent)
        return query.vector, query.source

    # -- ranking ------------------------------------------------------------------------------

    @property
    def _floor(self) -> float:
        """Scores at or below this are no evidence (ALS: an untouched item predicts 0).

        BPR scores have no such zero (only differences are learnt), so BPR uses none.
        """
        return -np.inf if self.params.algorithm == "bpr" else 0.0

    def _rank(self, queries: list[Query], *, scope: Scope, ns: Sequence[int]) -> list[RankedList]:
        """Answer each query (query i wants ns[i] items): popular ones the model cannot score,
        then the strategy's shortlists, then item-item profiles one by one and factor vectors
        together, a chunk at a time."""
        answers: dict[int, RankedList] = {}
        vectors: dict[int, np.ndarray] = {}
        profiles: dict[int, np.ndarray] = {}
        for i, query in enumerate(queries):
            if query.vector is not None:
                vectors[i] = query.vector
            elif query.profile is not None:
                profiles[i] = query.profile
            else:
                answers[i] = self._popular_list(scope, query.banned, ns[i])
        asked = [*vectors, *profiles]
        shortlists = self._serving.shortlist(
            [queries[i] for i in asked],
            item_factors=self._model.item_factors,
            scope=scope,
            ns=[ns[i] for i in asked],
            floor=self._floor,
        )
        for i, shortlist in zip(asked, shortlists, strict=True):
            if shortlist is not None:
                answers[i] = self._shortlisted(*shortlist, queries[i], scope, ns[i])
                vectors.pop(i, None)
                profiles.pop(i, None)
        for i, rows in profiles.items():  # an item-item model: the sum of the user's rows
            scores = self._model.profile_scores(rows, scope)
            answers[i] = self._model_list(scores, queries[i], scope, ns[i], floor=0.0)
        scored = list(vectors)
        width = max(self.n_items if scope.candidates is None else len(scope.candidates), 1)
        step = max(1, _SCORE_BUDGET // width)
        for lo in range(0, len(scored), step):
            chunk = scored[lo : lo + step]
            block = self._serving.score(
                np.stack([vectors[i] for i in chunk]), self._model.item_factors, scope
            )
            for j, i in enumerate(chunk):
                answers[i] = self._model_list(block[j], queries[i], scope, ns[i], floor=self._floor)
        return [answers[i] for i in range(len(queries))]

    def _shortlisted(
        self, rows: np.ndarray, scores: np.ndarray, query: Query, scope: Scope, n: int
    ) -> RankedList:
        """A strategy's model part (eligible, best first), filled with popular items."""
        fill = first_allowed(scope.popular, n - len(rows), np.concatenate([query.banned, rows]))
        return self._answer(rows, scores, fill, query.source)

    def _model_list(
        self, scores: np.ndarray, query: Query, scope: Scope, n: int, *, floor: float
    ) -> RankedList:
        """Top n by score among eligible items above `floor`, then popular items to fill."""
        rows, top_scores, fill = rank_scored(scores, scope, query.banned, n, floor=floor)
        return self._answer(rows, top_scores, fill, query.source)

    def _popular_list(self, scope: Scope, banned: np.ndarray, n: int) -> RankedList:
        """The most popular eligible items that are not banned."""
        return self._answer(NO_ITEMS, NO_ITEMS, first_allowed(scope.popular, n, banned), "popular")

    def _answer(
        self, rows: np.ndarray, scores: np.ndarray, fill: np.ndarray, source: str
    ) -> RankedList:
        """Ids and plain-float scores; filled items score their popularity."""
        ranked = np.concatenate([rows, fill]).astype(np.int64)
        return RankedList(
            item_ids=self._model.items.ids[ranked].tolist(),
            scores=[
                *np.asarray(scores, dtype=np.float64).tolist(),
                *self._model.popularity[fill].tolist(),
            ],
            source=source,
            filled_from_popular=len(fill),
        )


def _check_n(n: int) -> None:
    """Refuse an empty request: it would silently answer nothing."""
    if n < 1:
        raise ValueError("n must be >= 1")


def _align(catalog: CatalogSnapshot, model: ModelArrays) -> CatalogView:
    """Put the catalogue in the model's item order (see scoring.catalog_view)."""
    categories = np.asarray(catalog.categories)
    if categories.dtype.kind != "U":  # e.g. objects with None for "no category"
        categories = np.array(["" if c is None else str(c) for c in categories], dtype=str)
    return catalog_view(
        model.items.find(catalog.item_ids), categories, catalog.available, model.popularity
    )


def _confidence_settings(manifest: ArtifactManifest) -> ConfidenceSettings:
    """The weights training used (data.confidence); defaults for a manifest without them."""
    raw = manifest.data.get("confidence") or {}
    names = {f.name for f in fields(ConfidenceSettings)}
    return ConfidenceSettings(**{k: v for k, v in raw.items() if k in names})


def _trained_until(manifest: ArtifactManifest, created_at: datetime) -> float:
    """Newest event time the version was trained on (data.window_end), else its creation."""
    window_end = manifest.data.get("window_end")
    moment = datetime.fromisoformat(window_end) if window_end else created_at
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
