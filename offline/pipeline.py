"""run_retrain(): load > build > fit > evaluate > gate > final fit > export, each phase metered.

Fit and evaluate cover every candidate of the selection (offline/selection.py): the popularity
baselines always, the other algorithms with `auto` (or the one pinned); the best on the holdout
is published unless it is worse than the live version.

The caller holds the retrain lock (offline.runs) and owns the run row; this module only
turns events into a published (or rejected) model version and reports what each phase cost.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import scipy.sparse as sp

from offline.dataset import InteractionMatrix, interactions
from offline.evaluation import Decision, RankingMetrics, should_publish
from offline.holdout import (
    Holdout,
    NoTrainingData,
    build_matrix_for,
    popularity_metrics,
    score_model,
    time_split_holdout,
)
from offline.loading import load_events, window_start
from offline.models import ItemItemModel, Model, PopularityModel, fit_model
from offline.selection import (
    Selection,
    candidate_params,
    fit_candidates,
    money_spent,
    score_candidates,
)
from offline.serving_build import item_item_precomputed, serving_arrays
from shared import artifacts, registry
from shared.confidence import EventColumns
from shared.costs import Price
from shared.metering import Meter, PhaseMeasurement, PhaseProgress
from shared.model_spec import ModelParams
from shared.retrain_config import RetrainConfig
from shared.serving_strategy import ServingStrategy, refusal, serving_for

log = logging.getLogger(__name__)
PhaseCallback = Callable[[str, list[PhaseMeasurement]], None]
# Called after each fit iteration with the running phase; raising stops the fit (budgets).
IterationCallback = Callable[[PhaseProgress, int], None]


@dataclass
class RetrainResult:
    status: str  # "promoted" | "rejected"
    version: str
    reason: str
    metrics: dict[str, Any]
    phases: list[PhaseMeasurement] = field(default_factory=list)


def run_retrain(
    conn: psycopg.Connection,
    *,
    run_id: uuid.UUID,
    config: RetrainConfig,
    artifact_dir: Path,
    meter: Meter,
    on_phase: PhaseCallback | None = None,
    on_iteration: IterationCallback | None = None,
    moved_by: str = "retrain",
    selection_price: Price | None = None,
) -> RetrainResult:
    """Select, evaluate and publish one version; the version row says whether it went live.

    The candidates (offline.selection) are fitted in the "fit" phase and scored in
    "evaluate", so the selection's compute is on the ledger like any fit. `selection_price`
    prices a money budget for the selection.
    """

    def phase(name: str) -> Any:
        if on_phase:
            on_phase(name, list(meter.measurements))
        return meter.measure(name)

    def iterations(progress: PhaseProgress) -> Callable[[int], None] | None:
        if on_iteration is None:
            return None
        hook = on_iteration
        return lambda n: hook(progress, n)

    with phase("load"):
        newest, received_until = _watermarks(conn)
        if newest is None:
            raise NoTrainingData("there are no events")
        since = window_start(newest, config.window_days)
        events = load_events(conn, since=since)
        config = replace(config, confidence=config.confidence.resolved_for(events))
    with phase("build"):
        split = time_split_holdout(events, config)
        full = build_matrix_for(events, config)
        candidates = candidate_params(config, split)
    with phase("fit") as progress:
        fitted = fit_candidates(
            split,
            config,
            candidates,
            on_iteration=iterations(progress),
            spent=money_spent(config, selection_price, meter, progress),
        )
    with phase("evaluate") as progress:
        selection = score_candidates(fitted, split, config)
        live = registry.promoted_version(conn)
        metrics = _evaluate(selection, split, config, live=live, on_iteration=iterations(progress))
        decision = _gate(metrics, config, label=selection.best.label, has_live=live is not None)
    chosen = selection.best.params
    serving, served_note = serving_for(config.serving, chosen)
    reason = f"{decision.reason}{served_note}"
    published: Model = selection.best_model
    if decision.promote and config.final_fit:
        with phase("final_fit") as progress:
            published = fit_model(
                full,
                chosen,
                events=events,
                on_iteration=iterations(progress),
                ease_max_items=config.ease_max_items,
            )
    with phase("export"):
        matrix = full if published is not selection.best_model else split.train
        version = _version_name(run_id)
        path = artifacts.write_version(
            artifact_dir,
            version,
            version_arrays(published, matrix, events, serving=serving),
            manifest_fields=_manifest(
                config, chosen, serving, events, split, matrix, metrics, since, newest
            ),
        )
    status = "promoted" if decision.promote else "rejected"
    registry.publish_version(
        conn,
        registry.ModelVersion(
            version=version,
            run_id=run_id,
            created_at=datetime.now(UTC),
            status=status,
            reason=reason,
            algorithm=chosen.algorithm,
            params=chosen.to_dict(),
            metrics=metrics,
            data=_data_summary(events, matrix, since, newest, split.cutoff),
            artifact_path=str(path),
            artifact_bytes=artifacts.directory_size(path),
            events_until=newest,
            received_until=received_until,
            files_deleted_at=None,
        ),
        promote=decision.promote,
        moved_by=moved_by,
    )
    conn.commit()
    if on_phase:
        on_phase("done", list(meter.measurements))
    return RetrainResult(status, version, reason, metrics, list(meter.measurements))


def _watermarks(conn: psycopg.Connection) -> tuple[datetime | None, datetime | None]:
    """The newest event's time and arrival, in one scan."""
    row = conn.execute("SELECT max(occurred_at), max(received_at) FROM events").fetchone()
    return (row[0], row[1]) if row else (None, None)


def _evaluate(
    selection: Selection,
    split: Holdout,
    config: RetrainConfig,
    *,
    live: registry.ModelVersion | None,
    on_iteration: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Every candidate, the chosen one, popularity and the live version's settings, all on
    the same holdout.

    The live version's published model has usually seen the holdout, so its settings are
    refit on the same training split instead (reusing a candidate with the same settings).
    """
    best = selection.best
    assert best.metrics is not None
    results: dict[str, Any] = {
        "candidate": best.metrics.to_dict(),
        "popularity": popularity_metrics(split, config.k).to_dict(),
        "cutoff": datetime.fromtimestamp(split.cutoff, UTC).isoformat(),
        "selection": selection.to_dict(),
    }
    if live is not None:
        results["live_version"] = live.version
        live_params = ModelParams.from_dict({**live.params, "algorithm": live.algorithm})
        same = [
            c.metrics
            for c in selection.candidates
            if c.metrics is not None and c.params.to_dict() == live_params.to_dict()
        ]
        if same:
            results["live"] = same[0].to_dict()
        else:
            refit = fit_model(
                split.train,
                live_params,
                events=split.train_events,
                on_iteration=on_iteration,
                ease_max_items=config.ease_max_items,
            )
            results["live"] = score_model(refit, split, config.k).to_dict()
    return results


def _gate(
    metrics: dict[str, Any], config: RetrainConfig, *, label: str, has_live: bool
) -> Decision:
    return should_publish(
        RankingMetrics(**metrics["candidate"]),
        label=label,
        popularity=RankingMetrics(**metrics["popularity"]),
        live=RankingMetrics(**metrics["live"]) if has_live else None,
        tolerance=config.gate_tolerance,
        metric=config.gate_metric,
    )


def _version_name(run_id: uuid.UUID) -> str:
    return f"v{datetime.now(UTC):%Y%m%d-%H%M%S}-{run_id.hex[:6]}"


def version_arrays(
    model: Model,
    matrix: InteractionMatrix,
    events: EventColumns,
    *,
    serving: ServingStrategy | None = None,
) -> dict[str, Any]:
    """What the API needs: id maps, seen items, item popularity, the model's own arrays
    (factors; an item-item matrix; nothing more for popularity), and the arrays of the
    serving strategy (offline.serving_build; none for exact and batched).

    "Seen" holds every event of the window on the published axes, whatever its weight: an
    item a user rated low, or saw after the evaluation cutoff, is never recommended to them.
    A popularity version's item popularity is its own (recency-weighted) score.
    """
    seen = interactions(events, user_ids=matrix.user_ids, item_ids=matrix.item_ids)
    shoppers = np.asarray(seen.sum(axis=0)).ravel().astype(np.float32)
    arrays: dict[str, Any] = {
        "user_ids": np.asarray(matrix.user_ids),
        "item_ids": np.asarray(matrix.item_ids),
        "seen": seen,
        "item_popularity": shoppers,
    }
    if isinstance(model, PopularityModel):
        arrays["item_popularity"] = np.asarray(model.scores, dtype=np.float32)
    elif isinstance(model, ItemItemModel):
        similarity = model.similarity
        if sp.issparse(similarity):
            arrays["similarity"] = sp.csr_matrix(similarity, dtype=np.float32)
        else:
            arrays["similarity_dense"] = np.ascontiguousarray(similarity, dtype=np.float32)
    else:
        arrays["user_factors"] = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        arrays["item_factors"] = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    if serving is not None:
        arrays |= strategy_arrays(model, arrays, serving)
    return arrays


def strategy_arrays(
    model: Model, arrays: dict[str, Any], serving: ServingStrategy
) -> dict[str, Any]:
    """The serving strategy's own arrays for a version's `arrays` (offline.serving_build):
    precomputed lists for factor and item-item models, the ANN index or float16 factors for
    factor models; nothing for exact and batched, nor for a popularity version. ValueError
    for a combination the kind cannot serve (shared.serving_strategy.refusal)."""
    why = refusal(serving.name, model.params.kind)
    if why is not None:
        raise ValueError(why)
    if isinstance(model, PopularityModel):
        return {}
    seen = arrays["seen"]
    if isinstance(model, ItemItemModel):
        if serving.name != "precomputed":
            return {}
        return dict(item_item_precomputed(model.similarity, seen, serving))
    return dict(  # activity: distinct items seen in the window
        serving_arrays(
            serving,
            user_factors=arrays["user_factors"],
            item_factors=arrays["item_factors"],
            seen=seen,
            user_activity=np.diff(seen.indptr),
        )
    )


def _data_summary(
    events: EventColumns,
    matrix: InteractionMatrix,
    since: datetime | None,
    newest: datetime,
    cutoff: float,
) -> dict[str, Any]:
    return {
        "window_start": since.isoformat() if since else None,
        "window_end": newest.isoformat(),
        "events": len(events),
        "users": matrix.shape[0],
        "items": matrix.shape[1],
        "interactions": int(matrix.matrix.nnz),
        "evaluation_cutoff": datetime.fromtimestamp(cutoff, UTC).isoformat(),
    }


def _manifest(
    config: RetrainConfig,
    chosen: ModelParams,
    serving: ServingStrategy,
    events: EventColumns,
    split: Holdout,
    matrix: InteractionMatrix,
    metrics: dict[str, Any],
    since: datetime | None,
    newest: datetime,
) -> dict[str, Any]:
    return {
        "algorithm": chosen.algorithm,
        "params": chosen.to_dict(),
        "data": {
            **_data_summary(events, matrix, since, newest, split.cutoff),
            "confidence": config.confidence.to_dict(),
            "trained_on": "window" if matrix is not split.train else "training split",
        },
        "metrics": metrics,
        "serving": serving.to_dict(),
    }
