"""The time-split holdout every comparison of settings is made on.

Train on events before a time cutoff, test on each user's later items that training did not
see. The retrain's gate (offline/pipeline.py), the tradeoff lab and the tuner all build and
score it through here, so their numbers are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import scipy.sparse as sp

from offline.dataset import InteractionMatrix, build_matrix
from offline.evaluation import (
    RankingMetrics,
    choose_cutoff,
    drop_seen,
    popularity_ranking,
    ranking_metrics,
    time_split,
)
from offline.loading import load_events, window_start
from offline.models import ItemItemModel, Model, PopularityModel, presence
from shared.confidence import EventColumns
from shared.ranking.scoring import item_item_scores
from shared.ranking.topk import top_k, top_k_by
from shared.retrain_config import RetrainConfig

__all__ = [
    "Holdout",
    "NoTrainingData",
    "build_matrix_for",
    "load_window",
    "popularity_metrics",
    "score_model",
    "time_split_holdout",
]


class NoTrainingData(RuntimeError):
    """The window holds too few events to split, train and evaluate."""


@dataclass(frozen=True)
class Holdout:
    train: InteractionMatrix
    relevant: sp.csr_matrix  # test interactions not seen in training, aligned with train
    users: np.ndarray  # train rows with at least one relevant test item (maybe a sample)
    cutoff: float
    train_events: EventColumns  # the events before the cutoff (recency-weighted popularity)
    test_span_seconds: float  # from the cutoff to the newest event: what is predicted

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])


def load_window(conn: psycopg.Connection, config: RetrainConfig) -> EventColumns:
    """The events of the retrain window (all events when no window is set)."""
    row = conn.execute("SELECT max(occurred_at) FROM events").fetchone()
    newest = row[0] if row else None
    if newest is None:
        raise NoTrainingData("there are no events")
    return load_events(conn, since=window_start(newest, config.window_days))


def build_matrix_for(events: EventColumns, config: RetrainConfig, **axes: Any) -> InteractionMatrix:
    """The confidence matrix of `events` under the config's weights and filters."""
    return build_matrix(
        events,
        confidence=config.confidence,
        reference_time=float(events.occurred_at.max()),
        min_user_events=config.min_user_events,
        min_item_events=config.min_item_events,
        **axes,
    )


def time_split_holdout(events: EventColumns, config: RetrainConfig) -> Holdout:
    """Train on events before a time cutoff; test on each user's later, unseen items."""
    if len(events) < 10:
        raise NoTrainingData(f"only {len(events)} events in the window")
    cutoff = choose_cutoff(events.occurred_at, test_fraction=config.test_fraction)
    before, after = time_split(events, cutoff=cutoff)
    train = build_matrix_for(before, config)
    test = build_matrix_for(after, config, user_ids=train.user_ids, item_ids=train.item_ids)
    relevant = drop_seen((test.matrix > 0).astype(np.float32).tocsr(), train.matrix)
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    if len(users) > config.max_eval_users:  # a fixed sample, so reruns compare like with like
        rng = np.random.default_rng(config.model.random_state)
        users = np.sort(rng.choice(users, size=config.max_eval_users, replace=False))
    if train.matrix.nnz == 0 or len(users) == 0:
        raise NoTrainingData("the time split left no training data or no test users")
    span = float(after.occurred_at.max()) - cutoff if len(after) else 0.0
    return Holdout(train, relevant, users, cutoff, before, span)


def score_model(model: Model, holdout: Holdout, k: int) -> RankingMetrics:
    """Top-k of the holdout's users (training items excluded) against their test items, for
    any algorithm: factors exactly, item-item models by their rows, popularity by its order."""
    items = rank_holdout(model, holdout, k)
    return ranking_metrics(items, holdout.relevant[holdout.users], k=k, n_items=holdout.n_items)


def rank_holdout(model: Model, holdout: Holdout, k: int) -> np.ndarray:
    """Each holdout user's top-k item columns (-1 padded), training items excluded."""
    train = holdout.train.matrix
    if isinstance(model, PopularityModel):
        return popularity_ranking(train, holdout.users, k=k, scores=model.scores)
    if isinstance(model, ItemItemModel):
        rows = presence(train)
        similarity = model.similarity
        # As served: items with evidence (score > 0) by score, then the rest by popularity.
        shoppers = np.bincount(rows.indices, minlength=holdout.n_items).astype(np.float32)
        fill = shoppers / (shoppers.max() + 1.0)

        def block(users: np.ndarray) -> np.ndarray:
            scores = item_item_scores(rows[users], similarity)
            return np.where(scores > 0, scores + 1.0, fill[None, :])

        items, _ = top_k_by(block, holdout.users, n_items=holdout.n_items, k=k, exclude=train)
        return items
    items, _ = top_k(model.user_factors, model.item_factors, holdout.users, k=k, exclude=train)
    return items


def popularity_metrics(holdout: Holdout, k: int) -> RankingMetrics:
    """The whole-window popularity baseline on the same holdout."""
    return ranking_metrics(
        popularity_ranking(holdout.train.matrix, holdout.users, k=k),
        holdout.relevant[holdout.users],
        k=k,
        n_items=holdout.n_items,
    )
