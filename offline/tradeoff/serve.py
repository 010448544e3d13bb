"""Serve a measured candidate's version in-process: replay the request mix, score its lists.

The version is written to a scratch folder and loaded as the API loads it, so latency, CPU
and memory are those of the real serving code for the candidate's strategy.
"""

from __future__ import annotations

import gc
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from offline.evaluation import RankingMetrics, ranking_metrics
from offline.holdout import Holdout
from offline.models import Model
from offline.tradeoff.prepared import Prepared
from offline.tradeoff.replay import (
    Mix,
    Population,
    recall_against_exact,
    replay,
    replay_batched,
    request_mix,
)
from shared import artifacts
from shared.ranking.recommender import Recommender, UserRequest
from shared.serving_strategy import ServingStrategy


def serve_version(
    prepared: Prepared,
    strategy: ServingStrategy,
    model: Model,
    arrays: dict[str, Any],
    mix: Mix,
    active_users: int | None,
) -> tuple[dict[str, Any], RankingMetrics]:
    """Write the version to a scratch folder, load it as the API does, replay the mix and
    score what it serves to the holdout's users."""
    window_end = datetime.fromtimestamp(float(prepared.before.occurred_at.max()), UTC)
    manifest: dict[str, Any] = {
        "algorithm": model.params.algorithm,
        "params": model.params.to_dict(),
        "data": {
            "confidence": prepared.config.confidence.to_dict(),
            "window_end": window_end.isoformat(),
        },
    }
    process = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="recsys-tradeoff-") as scratch:
        path = artifacts.write_version(
            Path(scratch), f"tradeoff-{secrets.token_hex(4)}", arrays, manifest_fields=manifest
        )
        gc.collect()
        rss_before = process.memory_info().rss
        recommender = Recommender.load(path, catalog=prepared.catalog)
        requests = request_mix(
            mix, _population(arrays, prepared, recommender), active_users=active_users
        )
        if strategy.name == "batched":
            result = replay_batched(
                recommender, requests, n=mix.n, strategy=strategy, concurrency=mix.concurrency
            )
        else:
            result = replay(recommender, requests, n=mix.n)
        rss_growth = process.memory_info().rss - rss_before
        artifact_bytes = artifacts.directory_size(path)
        served = served_quality(recommender, prepared.holdout, prepared.config.k)
        del recommender
    recall = None
    if "user_factors" in arrays:  # item-item and popularity versions serve exactly
        recall = recall_against_exact(
            requests,
            result.answers,
            user_ids=arrays["user_ids"],
            user_factors=arrays["user_factors"],
            item_ids=arrays["item_ids"],
            item_factors=arrays["item_factors"],
            seen=arrays["seen"],
        )
    return {
        "ann_recall": _ann_recall(strategy, arrays),
        "requests": len(requests),
        "serving_cpu_per_1000": result.cpu_per_1000,
        "p50_ms": result.latency_ms(50),
        "p99_ms": result.latency_ms(99),
        "rss_growth_bytes": max(0, int(rss_growth)),
        "artifact_bytes": artifact_bytes,
        "recall_vs_exact": recall,
    }, served


def served_quality(recommender: Recommender, holdout: Holdout, k: int) -> RankingMetrics:
    """NDCG, recall and precision at k of the lists the version serves to the holdout's users.

    What a shopper would be shown (the strategy's ranking, catalogue filters, popular fill),
    so an approximate strategy is judged on its answers, not on its model's exact ranking;
    for exact-equivalent strategies it differs from score_model() only by the catalogue and
    the popular fill.
    """
    user_ids = np.asarray(holdout.train.user_ids)[holdout.users]
    position = {item: i for i, item in enumerate(np.asarray(holdout.train.item_ids).tolist())}
    top = np.full((len(user_ids), k), -1, dtype=np.int64)
    for start in range(0, len(user_ids), 100):
        chunk = [UserRequest(str(user), k) for user in user_ids[start : start + 100]]
        for row, answer in enumerate(recommender.recommend_requests(chunk), start):
            items = [position.get(item, -1) for item in answer.item_ids[:k]]
            top[row, : len(items)] = items
    truth = holdout.relevant[holdout.users]
    return ranking_metrics(top, truth, k=k, n_items=holdout.n_items)


def _ann_recall(strategy: ServingStrategy, arrays: dict[str, Any]) -> float | None:
    """The ANN index's own recall@10 against exact scoring (ranking.strategies.ann_recall)."""
    if strategy.name != "ann":
        return None
    from shared.ranking.strategies import AnnIndex, ann_recall

    index = AnnIndex(arrays["ann_index"], ef_search=strategy.ann_ef_search)
    return ann_recall(index, arrays["user_factors"], arrays["item_factors"], k=10)


def _population(arrays: dict[str, Any], prepared: Prepared, recommender: Recommender) -> Population:
    known = set(arrays["item_ids"].tolist())
    categories = sorted(
        {
            str(c)
            for item, c, ok in zip(
                prepared.catalog.item_ids,
                prepared.catalog.categories,
                prepared.catalog.available,
                strict=True,
            )
            if c and ok and item in known
        }
    )
    return Population(
        user_ids=arrays["user_ids"],
        activity=np.diff(arrays["seen"].indptr),
        item_ids=arrays["item_ids"],
        item_weights=arrays["item_popularity"],
        categories=tuple(categories),
        trained_until=recommender.trained_until,
    )
