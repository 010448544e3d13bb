"""Measure candidates: metered training, quality on the holdout, serving replayed in-process.

What a retrain of a candidate would cost is measured phase by phase with the same Meter
the retrain uses: load + split (`prepare`, shared by the candidates of one process), the fit
on the training split, the holdout scoring, and the strategy's serving build. The retrain's
final fit on the whole window is not run again: it is priced as the measured fit scaled by the
ratio of interactions (window / training split), since both implicit solvers' work per
iteration grows linearly with the interactions, as item-kNN's co-occurrence count roughly does;
EASE's inversion depends on the items alone, so the ratio overstates it a little (the items of
the window are barely more than the training split's). `final_fit_factor` records the ratio.

Every algorithm the retrain fits is measured the same way (offline.models.fit_model); a
strategy its kind cannot serve (ann or float16 for item-kNN, EASE and popularity; anything but
exact for popularity) fails its candidate with the reason (shared.serving_strategy.refusal).

Candidates that differ only in their serving strategy share one fit (`fit_model`, then
`measure_strategy` per strategy); each is still charged the whole fit in its training cost.
Serving is measured on the model fitted on the training split: the published model has the
same shape (users, items, factors) and the same strategy arrays, only other values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from offline.dataset import InteractionMatrix
from offline.evaluation import RankingMetrics
from offline.holdout import score_model
from offline.models import Model
from offline.models import fit_model as fit_any
from offline.pipeline import strategy_arrays, version_arrays
from offline.tradeoff.candidates import Candidate
from offline.tradeoff.prepared import Prepared
from offline.tradeoff.replay import Mix
from offline.tradeoff.serve import serve_version
from shared.costs import Price, measurement_cost
from shared.metering import Meter, PhaseMeasurement
from shared.model_spec import ModelParams


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


# How a model setting is fitted on the training split: by default as the retrain fits it
# (offline.models.fit_model), or a wrapper (tests count its calls).
FitFunction = Callable[[InteractionMatrix, ModelParams], Model]


@dataclass(frozen=True)
class FittedModel:
    """One model setting fitted on the training split and scored on the holdout, with what
    the fit and the scoring cost: made once and shared by every strategy served from it."""

    model: Model
    metrics: RankingMetrics
    arrays: dict[str, Any]  # factors, ids, seen, popularity (no strategy arrays)
    fitting: PhaseMeasurement
    evaluating: PhaseMeasurement


def fit_model(
    prepared: Prepared,
    params: ModelParams,
    *,
    meter: Meter,
    fit_function: FitFunction | None = None,
) -> FittedModel:
    """Fit `params` on the training split and score it on the holdout, each metered."""
    holdout = prepared.holdout
    with meter.measure("fit") as fitting:
        if fit_function is None:
            model = fit_any(
                holdout.train,
                params,
                events=holdout.train_events,
                ease_max_items=prepared.config.ease_max_items,
            )
        else:
            model = fit_function(holdout.train, params)
    with meter.measure("evaluate") as evaluating:
        metrics = score_model(model, holdout, prepared.config.k)
    assert fitting.measurement is not None
    assert evaluating.measurement is not None
    arrays = version_arrays(model, holdout.train, prepared.before)
    return FittedModel(model, metrics, arrays, fitting.measurement, evaluating.measurement)


def measure_strategy(
    prepared: Prepared,
    fitted: FittedModel,
    candidate: Candidate,
    *,
    price: Price,
    meter: Meter,
    mix: Mix,
    active_users: int | None,
) -> Measurement:
    """Build and serve one candidate's strategy on its already fitted model; raises on failure.

    The candidate's training cost is what a real retrain with its settings would cost on its
    own: loading and splitting, the whole fit and holdout scoring, the final fit (scaled), and
    this strategy's serving build. The fit is shared by the sweep's candidates of one model
    setting only to save the sweep's time; each candidate is charged all of it, not a share,
    so candidates price the same whether they are measured alone or together.
    """
    config, holdout = prepared.config, prepared.holdout
    strategy = candidate.strategy()
    with meter.measure("serving_build") as building:
        extra = strategy_arrays(fitted.model, fitted.arrays, strategy)
    assert building.measurement is not None
    factor = prepared.full_nnz / max(holdout.train.matrix.nnz, 1) if config.final_fit else 0.0
    phases = (prepared.phase, fitted.fitting, fitted.evaluating, building.measurement)
    final_fit = factor * measurement_cost(price, fitted.fitting)
    training_cost = sum(measurement_cost(price, m) for m in phases) + final_fit
    arrays = {**fitted.arrays, **extra}
    serving, served = serve_version(prepared, strategy, fitted.model, arrays, mix, active_users)
    notes: list[str] = []
    if abs(served.ndcg - fitted.metrics.ndcg) > 1e-9:
        notes.append(f"the model's exact ranking scores ndcg {fitted.metrics.ndcg:.4f}")
    return Measurement(
        k=config.k,
        ndcg=served.ndcg,
        recall=served.recall,
        precision=served.precision,
        eval_users=served.users,
        train_wall_seconds=fitted.fitting.wall_seconds,
        train_cpu_seconds=fitted.fitting.cpu_seconds,
        train_peak_rss_bytes=fitted.fitting.peak_rss_bytes,
        final_fit_factor=factor,
        training_cost=training_cost,
        notes="; ".join(notes),
        **serving,
    )
