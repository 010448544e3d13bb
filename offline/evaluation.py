"""Pure: split events by time, score rankings, rank by popularity, decide on promotion.

Metric definitions (binary relevance, per user, then averaged over users with at least one
relevant test item; `hits` = recommended items among the relevant ones):
- precision@k = hits / k
- recall@k = hits / min(k, |relevant|): the normalisation of Liang et al. 2018 (VAE-CF) and of
  implicit's ranking_metrics_at_k, so a perfect ranking scores 1 even when |relevant| > k
- NDCG@k = DCG / ideal DCG, gain 1 / log2(rank + 1) for a hit at rank 1..k
- MAP@k = mean of AP@k = sum of precision@rank at each hit / min(k, |relevant|)
- coverage = distinct items recommended to the evaluated users / n_items
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from shared.confidence import EventColumns

__all__ = [
    "Decision",
    "RankingMetrics",
    "choose_cutoff",
    "drop_seen",
    "popularity_ranking",
    "ranking_metrics",
    "should_publish",
    "time_split",
]

METRICS = ("precision", "recall", "ndcg", "map", "coverage")


def choose_cutoff(occurred_at: np.ndarray, *, test_fraction: float = 0.2) -> float:
    """The time before which about (1 - test_fraction) of the events fall."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    if len(occurred_at) == 0:
        raise ValueError("no events to split")
    return float(np.quantile(np.asarray(occurred_at, dtype=np.float64), 1.0 - test_fraction))


def time_split(events: EventColumns, *, cutoff: float) -> tuple[EventColumns, EventColumns]:
    """(events before cutoff, events at or after it); dictionaries are shared."""
    before = events.occurred_at < cutoff
    return events.subset(before), events.subset(~before)


def drop_seen(relevant: sp.csr_matrix, seen: sp.csr_matrix) -> sp.csr_matrix:
    """`relevant` without the pairs stored in `seen` (same shape): a model that never shows
    a user's training items can only be judged on the items that are new to the user.
    """
    if relevant.shape != seen.shape:
        raise ValueError("relevant and seen must have the same shape")
    mask = sp.csr_matrix(
        (np.ones(seen.nnz, dtype=np.int8), seen.indices, seen.indptr), shape=seen.shape
    )
    kept = sp.csr_matrix(relevant, copy=True)
    if kept.nnz == 0:
        return kept
    rows = np.repeat(np.arange(kept.shape[0]), np.diff(kept.indptr))
    stored = np.asarray(mask[rows, kept.indices]).ravel() != 0
    kept.data = np.where(stored, 0, kept.data)
    kept.eliminate_zeros()
    return kept


@dataclass(frozen=True)
class RankingMetrics:
    """Top-k quality of one ranking on one holdout."""

    k: int
    users: int  # users evaluated (those with a relevant test item)
    precision: float
    recall: float
    ndcg: float
    map: float
    coverage: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain values, for the manifest and the CLI."""
        return asdict(self)


def ranking_metrics(
    recommended: np.ndarray, relevant: sp.csr_matrix, *, k: int, n_items: int
) -> RankingMetrics:
    """Metrics of `recommended` (users x >= k item indices, -1 = padding) against `relevant`.

    Row u of `relevant` holds user u's test items (stored entries with a nonzero value).
    """
    recommended = np.asarray(recommended, dtype=np.int64)
    if recommended.ndim != 2 or recommended.shape[1] < k or k < 1:
        raise ValueError("recommended must be (users, >= k) with k >= 1")
    if relevant.shape[0] != recommended.shape[0]:
        raise ValueError("relevant must have one row per recommended row")
    truth = sp.csr_matrix(relevant, copy=True)
    truth.eliminate_zeros()
    n_relevant = np.diff(truth.indptr)
    rows = np.flatnonzero(n_relevant > 0)
    if len(rows) == 0:
        return RankingMetrics(k, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    top = recommended[rows, :k]
    hits = _hits(top, truth[rows])
    ideal = np.minimum(n_relevant[rows], k)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal_dcg = np.cumsum(discount)[ideal - 1]
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    shown = np.unique(top[top >= 0])
    return RankingMetrics(
        k=k,
        users=len(rows),
        precision=float(np.mean(hits.sum(axis=1) / k)),
        recall=float(np.mean(hits.sum(axis=1) / ideal)),
        ndcg=float(np.mean((hits @ discount) / ideal_dcg)),
        map=float(np.mean((precision_at * hits).sum(axis=1) / ideal)),
        coverage=len(shown) / n_items if n_items else 0.0,
    )


def _hits(top: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """hits[u, j] = 1.0 when top[u, j] is one of user u's relevant items (padding never)."""
    valid = top >= 0
    rows = np.repeat(np.arange(top.shape[0]), top.shape[1])
    found = np.asarray(truth[rows, np.where(valid, top, 0).ravel()]).reshape(top.shape)
    return ((found != 0) & valid).astype(np.float64)


def popularity_ranking(
    train: sp.csr_matrix,
    users: np.ndarray,
    *,
    k: int,
    exclude_seen: bool = True,
    scores: np.ndarray | None = None,
) -> np.ndarray:
    """Top-k most popular items per user: by `scores` (one per item), or by default by the
    most distinct users with a positive entry.

    Ties go to the lower item index. With exclude_seen, a user's stored items are skipped.
    """
    n_items = train.shape[1]
    if scores is None:
        scores = np.bincount(train.indices[train.data > 0], minlength=n_items)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked = np.full((len(users), k), -1, dtype=np.int64)
    for row, user in enumerate(users):
        # One global order; a user needs at most k + |seen| of its head to find k unseen items.
        seen = train.indices[train.indptr[user] : train.indptr[user + 1]]
        skip: set[int] = set(seen.tolist()) if exclude_seen else set()
        head = [item for item in order[: k + len(skip)].tolist() if item not in skip][:k]
        ranked[row, : len(head)] = head
    return ranked


@dataclass(frozen=True)
class Decision:
    """Whether to promote a candidate, and which rule decided (with the numbers)."""

    promote: bool
    reason: str


def should_publish(
    best: RankingMetrics,
    *,
    label: str,
    popularity: RankingMetrics,
    live: RankingMetrics | None,
    tolerance: float,
    metric: str = "ndcg",
) -> Decision:
    """Publish the best candidate of a selection (popularity baselines included) unless it is
    worse than the live version by more than `tolerance` (relative: 0.02 = 2% below live is
    still accepted). `popularity` (the whole-window baseline) is only quoted in the reason.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}")
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    if best.k != popularity.k or (live is not None and live.k != best.k):
        raise ValueError("metrics to compare must use the same k")
    name = f"{metric}@{best.k}"
    ours, baseline = getattr(best, metric), getattr(popularity, metric)
    if best.users == 0:
        return Decision(False, f"no test user to evaluate {name} on")
    won = f"{label} won with {name} {ours:.4f} (popularity over the window {baseline:.4f})"
    if live is None:
        return Decision(True, f"{won}; no live version")
    current = getattr(live, metric)
    floor = current * (1.0 - tolerance)
    if ours < floor:
        return Decision(
            False,
            f"the best candidate, {label}, {name} {ours:.4f}, is worse than live {current:.4f} "
            f"by more than {tolerance:.1%} (floor {floor:.4f})",
        )
    return Decision(True, f"{won} and is within {tolerance:.1%} of live {current:.4f}")
