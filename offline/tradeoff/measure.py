"""Measure one candidate: metered training, quality on the holdout, serving replayed in-process.

What a retrain of the candidate would cost is measured phase by phase with the same Meter
the retrain uses: load + split (`prepare`, shared by the candidates of one process), the fit
on the training split, the holdout scoring, and the strategy's serving build. The retrain's
final fit on the whole window is not run again: it is priced as the measured fit scaled by the
ratio of interactions (window / training split), since both implicit solvers' work per
iteration grows linearly with the interactions; `final_fit_factor` records the ratio used.

Serving is measured on the model fitted on the training split: the published model has the
same shape (users, items, factors) and the same strategy arrays, only other values.
"""

from __future__ import annotations

import gc
import secrets
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg

from offline.dataset import EventColumns
from offline.evaluation import RankingMetrics, ranking_metrics, time_split
from offline.holdout import Holdout, build_matrix_for, load_window, score_model, time_split_holdout
from offline.pipeline import _arrays
from offline.retrain_config import RetrainConfig
from offline.serving_build import serving_arrays
from offline.tradeoff.candidates import Candidate
from offline.tradeoff.replay import (
    Mix,
    Population,
    recall_against_exact,
    replay,
    replay_batched,
    request_mix,
)
from offline.training import TrainedFactors, fit
from online.recommender import CatalogSnapshot, Recommender, UserRequest
from shared import artifacts
from shared.costs import Price, measurement_cost
from shared.metering import Meter, PhaseMeasurement
from shared.serving_strategy import ServingStrategy


@dataclass(frozen=True)
class Prepared:
    """The window, its holdout and the catalogue: the same for every candidate of a sweep."""

    config: RetrainConfig
    before: EventColumns  # the training split's events ("seen" of the served artifact)
    holdout: Holdout
    full_nnz: int
    catalog: CatalogSnapshot
    phase: PhaseMeasurement  # what loading and splitting cost


@dataclass(frozen=True)
class Measurement:
    """Every figure measured for one candidate (training cost is per retrain)."""

    k: int
    ndcg: float
    recall: float
    precision: float
    eval_users: int
    train_wall_seconds: float
    train_cpu_seconds: float
    train_peak_rss_bytes: int
    final_fit_factor: float
    training_cost: float
    requests: int
    serving_cpu_per_1000: float
    p50_ms: float
    p99_ms: float
    rss_growth_bytes: int
    artifact_bytes: int
    recall_vs_exact: float | None
    ann_recall: float | None
    notes: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepare(conn: psycopg.Connection, config: RetrainConfig, *, meter: Meter) -> Prepared:
    """Load the retrain window and build its time-split holdout, metered as one phase."""
    from online.reloader import load_catalog

    with meter.measure("prepare") as progress:
        events = load_window(conn, config)
        holdout = time_split_holdout(events, config)
        before, _ = time_split(events, cutoff=holdout.cutoff)
        full_nnz = int(build_matrix_for(events, config).matrix.nnz)
    catalog = load_catalog(conn)
    conn.commit()
    assert progress.measurement is not None
    return Prepared(config, before, holdout, full_nnz, catalog, progress.measurement)


def measure_candidate(
    prepared: Prepared,
    candidate: Candidate,
    *,
    price: Price,
    meter: Meter,
    mix: Mix,
    active_users: int | None,
) -> Measurement:
    """Fit, score, build and serve one candidate; raises on failure (the sweep records it)."""
    config, holdout = prepared.config, prepared.holdout
    strategy = candidate.strategy()
    notes: list[str] = []
    start = len(meter.measurements)
    with meter.measure("fit") as fitting:
        model = fit(holdout.train, candidate.params())
    with meter.measure("evaluate"):
        metrics = score_model(model, holdout, config.k)
    arrays = _arrays(model, holdout.train, prepared.before)
    with meter.measure("serving_build"):
        extra = _serving_arrays(strategy, arrays)
    phases = meter.measurements[start:]
    assert fitting.measurement is not None
    factor = prepared.full_nnz / max(holdout.train.matrix.nnz, 1) if config.final_fit else 0.0
    training_cost = (
        measurement_cost(price, prepared.phase)
        + sum(measurement_cost(price, m) for m in phases)
        + factor * measurement_cost(price, fitting.measurement)
    )
    serving, served = _serve(prepared, candidate, model, {**arrays, **extra}, mix, active_users)
    if abs(served.ndcg - metrics.ndcg) > 1e-9:
        notes.append(f"the model's exact ranking scores ndcg {metrics.ndcg:.4f}")
    return Measurement(
        k=config.k,
        ndcg=served.ndcg,
        recall=served.recall,
        precision=served.precision,
        eval_users=served.users,
        train_wall_seconds=fitting.measurement.wall_seconds,
        train_cpu_seconds=fitting.measurement.cpu_seconds,
        train_peak_rss_bytes=fitting.measurement.peak_rss_bytes,
        final_fit_factor=factor,
        training_cost=training_cost,
        notes="; ".join(notes),
        **serving,
    )


def _serving_arrays(strategy: ServingStrategy, arrays: dict[str, Any]) -> dict[str, Any]:
    """The strategy's extra arrays, built as the retrain's export builds them."""
    return dict(
        serving_arrays(
            strategy,
            user_factors=arrays["user_factors"],
            item_factors=arrays["item_factors"],
            seen=arrays["seen"],
            user_activity=np.diff(arrays["seen"].indptr),
        )
    )


def _serve(
    prepared: Prepared,
    candidate: Candidate,
    model: TrainedFactors,
    arrays: dict[str, Any],
    mix: Mix,
    active_users: int | None,
) -> tuple[dict[str, Any], RankingMetrics]:
    """Write the version to a scratch folder, load it as the API does, replay the mix and
    score what it serves to the holdout's users."""
    strategy = candidate.strategy()
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
    """The ANN index's own recall@10 against exact scoring (online.strategies.ann_recall)."""
    if strategy.name != "ann":
        return None
    from online.strategies import AnnIndex, ann_recall

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
