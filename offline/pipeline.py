"""run_retrain(): load > build > fit > evaluate > gate > final fit > export, each phase metered.

The caller holds the retrain lock (offline.runs) and owns the run row; this module only
turns events into a published (or rejected) model version and reports what each phase cost.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from offline.dataset import InteractionMatrix, interactions
from offline.evaluation import Decision, RankingMetrics, should_promote
from offline.holdout import (
    Holdout,
    NoTrainingData,
    build_matrix_for,
    popularity_metrics,
    score_model,
    time_split_holdout,
)
from offline.loading import load_events, window_start
from offline.serving_build import serving_arrays
from offline.training import TrainedFactors, fit
from shared import artifacts, registry
from shared.confidence import EventColumns
from shared.metering import Meter, PhaseMeasurement, PhaseProgress
from shared.model_spec import ModelParams
from shared.retrain_config import RetrainConfig
from shared.serving_strategy import ServingStrategy

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
) -> RetrainResult:
    """Train, evaluate and publish one version; the version row says whether it went live."""

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
    with phase("build"):
        split = time_split_holdout(events, config)
        full = build_matrix_for(events, config)
    with phase("fit") as progress:
        candidate = fit(split.train, config.model, on_iteration=iterations(progress))
    with phase("evaluate") as progress:
        live = registry.promoted_version(conn)
        metrics = _evaluate(candidate, split, config, live=live, on_iteration=iterations(progress))
        decision = _gate(metrics, config, has_live=live is not None)
    published = candidate
    if decision.promote and config.final_fit:
        with phase("final_fit") as progress:
            published = fit(full, config.model, on_iteration=iterations(progress))
    with phase("export"):
        matrix = full if published is not candidate else split.train
        version = _version_name(run_id)
        path = artifacts.write_version(
            artifact_dir,
            version,
            version_arrays(published, matrix, events, serving=config.serving),
            manifest_fields=_manifest(config, events, split, matrix, metrics, since, newest),
        )
    status = "promoted" if decision.promote else "rejected"
    registry.publish_version(
        conn,
        registry.ModelVersion(
            version=version,
            run_id=run_id,
            created_at=datetime.now(UTC),
            status=status,
            reason=decision.reason,
            algorithm=config.model.algorithm,
            params=config.model.to_dict(),
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
    return RetrainResult(status, version, decision.reason, metrics, list(meter.measurements))


def _watermarks(conn: psycopg.Connection) -> tuple[datetime | None, datetime | None]:
    """The newest event's time and arrival, in one scan."""
    row = conn.execute("SELECT max(occurred_at), max(received_at) FROM events").fetchone()
    return (row[0], row[1]) if row else (None, None)


def _evaluate(
    candidate: TrainedFactors,
    split: Holdout,
    config: RetrainConfig,
    *,
    live: registry.ModelVersion | None,
    on_iteration: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Candidate, popularity and the live version's settings, all on the same holdout.

    The live version's published factors have usually seen the holdout, so its settings are
    refit on the same training split instead (skipped when they equal the candidate's).
    """
    results: dict[str, Any] = {
        "candidate": score_model(candidate, split, config.k).to_dict(),
        "popularity": popularity_metrics(split, config.k).to_dict(),
        "cutoff": datetime.fromtimestamp(split.cutoff, UTC).isoformat(),
    }
    if live is not None:
        results["live_version"] = live.version
        live_params = ModelParams.from_dict(live.params)
        if live_params.to_dict() == config.model.to_dict():
            results["live"] = results["candidate"]
        else:
            refit = fit(split.train, live_params, on_iteration=on_iteration)
            results["live"] = score_model(refit, split, config.k).to_dict()
    return results


def _gate(metrics: dict[str, Any], config: RetrainConfig, *, has_live: bool) -> Decision:
    return should_promote(
        RankingMetrics(**metrics["candidate"]),
        popularity=RankingMetrics(**metrics["popularity"]),
        live=RankingMetrics(**metrics["live"]) if has_live else None,
        tolerance=config.gate_tolerance,
        metric=config.gate_metric,
    )


def _version_name(run_id: uuid.UUID) -> str:
    return f"v{datetime.now(UTC):%Y%m%d-%H%M%S}-{run_id.hex[:6]}"


def version_arrays(
    model: TrainedFactors,
    matrix: InteractionMatrix,
    events: EventColumns,
    *,
    serving: ServingStrategy | None = None,
) -> dict[str, Any]:
    """What the API needs: factors, id maps, seen items, item popularity, and the arrays
    of the serving strategy (offline.serving_build; none for exact and batched).

    "Seen" holds every event of the window on the published axes, whatever its weight: an
    item a user rated low, or saw after the evaluation cutoff, is never recommended to them.
    """
    seen = interactions(events, user_ids=matrix.user_ids, item_ids=matrix.item_ids)
    popularity = np.asarray(seen.sum(axis=0)).ravel().astype(np.float32)
    arrays: dict[str, Any] = {
        "user_factors": np.ascontiguousarray(model.user_factors, dtype=np.float32),
        "item_factors": np.ascontiguousarray(model.item_factors, dtype=np.float32),
        "user_ids": np.asarray(matrix.user_ids),
        "item_ids": np.asarray(matrix.item_ids),
        "seen": seen,
        "item_popularity": popularity,
    }
    if serving is not None:  # activity: distinct items seen in the window
        arrays |= serving_arrays(
            serving,
            user_factors=arrays["user_factors"],
            item_factors=arrays["item_factors"],
            seen=seen,
            user_activity=np.diff(seen.indptr),
        )
    return arrays


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
    events: EventColumns,
    split: Holdout,
    matrix: InteractionMatrix,
    metrics: dict[str, Any],
    since: datetime | None,
    newest: datetime,
) -> dict[str, Any]:
    return {
        "algorithm": config.model.algorithm,
        "params": config.model.to_dict(),
        "data": {
            **_data_summary(events, matrix, since, newest, split.cutoff),
            "confidence": config.confidence.to_dict(),
            "trained_on": "window" if matrix is not split.train else "training split",
        },
        "metrics": metrics,
        "serving": config.serving.to_dict(),
    }
