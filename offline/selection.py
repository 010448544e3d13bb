"""Selection on the holdout: fit a small, budgeted set of candidates and rank them.

With `RECSYS_ALGORITHM=auto` (the default) a retrain fits, on the time-split holdout's
training side, the popularity baselines (the whole window; recency with two half-lives),
item-kNN (cosine and BM25), ALS with the configured settings and, when the catalogue fits,
EASE; it scores each on the same test users and the best on the gate metric is the one to
publish. A pinned algorithm is fitted alone, beside the popularity baselines: a shop always
gets the best of what was measured, and a popularity ranking that wins is published as such.

The candidates run cheapest first. A budget in CPU seconds or money (settings) bounds the
whole selection: once it is spent, the remaining candidates are recorded as skipped, never
silently dropped. A candidate that cannot be fitted (EASE over its item limit, a failure) is
recorded with the reason and the selection goes on.

Key knobs are set on principle from the holdout itself, never tuned to a data set:
- popularity's half-lives: the test period is what the ranking must predict, so the
  half-lives are half of it and twice it;
- EASE's l2 weight: it is added to the diagonal of X^T X, the items' counts of shoppers, so
  it only means something against those counts. Steck's published optima (500 on
  MovieLens-20M, 1,000 on Netflix, 200 on the Million Song Data) sit within a small factor
  of the mean count of shoppers per item of each data set; the candidates are half and
  twice that mean on the training split (a fixed 500 would flatten a small shop's EASE
  towards popularity and leave a huge one nearly unregularised).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from offline.algorithms.ease import EaseTooLarge
from offline.evaluation import RankingMetrics
from offline.holdout import Holdout, score_model
from offline.models import Model, fit_model
from shared.costs import OverBudget, Price, RunBudget
from shared.metering import Meter, PhaseProgress
from shared.model_spec import ModelParams
from shared.popularity import SECONDS_PER_DAY
from shared.retrain_config import RetrainConfig

__all__ = [
    "CandidateScore",
    "Fitted",
    "Selection",
    "candidate_params",
    "describe",
    "fit_candidates",
    "money_spent",
    "score_candidates",
    "select",
]

log = logging.getLogger(__name__)
_MIN_HALF_LIFE_DAYS = 1.0 / 24.0  # an hour: shorter would rank by the last few events alone


@dataclass(frozen=True)
class CandidateScore:
    """One candidate's outcome on the holdout; `metrics` is None when it was not scored."""

    label: str
    params: ModelParams
    metrics: RankingMetrics | None
    fit_cpu_seconds: float
    evaluate_cpu_seconds: float
    note: str | None = None  # why it was not scored: refused, over the budget, failed

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the run's metrics and `recsys runs show`."""
        return {
            "label": self.label,
            "algorithm": self.params.algorithm,
            "params": self.params.to_dict(),
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "fit_cpu_seconds": round(self.fit_cpu_seconds, 4),
            "evaluate_cpu_seconds": round(self.evaluate_cpu_seconds, 4),
            "note": self.note,
        }


@dataclass(frozen=True)
class Selection:
    """Every candidate as measured, and the best scored one."""

    candidates: list[CandidateScore]
    best: CandidateScore
    best_model: Model  # fitted on the training split
    metric: str

    def to_dict(self) -> dict[str, Any]:
        """The run's record of the selection."""
        return {
            "metric": self.metric,
            "chosen": self.best.label,
            "candidates": [c.to_dict() for c in self.candidates],
        }

    @property
    def cpu_seconds(self) -> float:
        """CPU spent fitting and scoring every candidate."""
        return _cpu(self.candidates)


def describe(params: ModelParams) -> str:
    """A short human label: 'als 64f λ5', 'item_knn cosine k200', 'popularity 3.5 d'."""
    algorithm = params.algorithm
    if algorithm in ("als", "bpr"):
        return f"{algorithm} {params.factors}f λ{params.effective_regularization:g}"
    if algorithm == "item_knn":
        return f"item_knn {params.similarity} k{params.neighbours}"
    if algorithm == "ease":
        return f"ease λ{params.effective_regularization:g}"
    half_life = params.recency_half_life_days
    return "popularity (window)" if half_life is None else f"popularity ({half_life:.3g} d)"


def candidate_params(config: RetrainConfig, holdout: Holdout) -> list[ModelParams]:
    """The candidates of one retrain, cheapest first (see the module docstring)."""
    base = config.model
    popular = replace(base, algorithm="popularity", regularization=None, iterations=None)
    span_days = max(holdout.test_span_seconds / SECONDS_PER_DAY, _MIN_HALF_LIFE_DAYS)
    baselines = [
        replace(popular, recency_half_life_days=None),
        replace(popular, recency_half_life_days=round(span_days / 2, 4)),
        replace(popular, recency_half_life_days=round(span_days * 2, 4)),
    ]
    if config.algorithm == "popularity":
        return baselines  # the pinned algorithm is the baselines themselves
    if config.algorithm != "auto":
        return [*baselines, base]
    knn = replace(base, algorithm="item_knn", regularization=None, iterations=None)
    ease = replace(base, algorithm="ease", iterations=None)
    support = mean_item_support(holdout)
    return [
        *baselines,
        replace(knn, similarity="cosine"),
        replace(knn, similarity="bm25"),
        replace(base, algorithm="als"),
        replace(ease, regularization=_round(max(support / 2, 1.0))),
        replace(ease, regularization=_round(max(support * 2, 1.0))),
    ]


def mean_item_support(holdout: Holdout) -> float:
    """The mean number of shoppers per item on the holdout's training side (EASE's anchor)."""
    presence = holdout.train.matrix > 0
    n_items = presence.shape[1]
    return float(presence.sum()) / n_items if n_items else 0.0


def _round(value: float) -> float:
    """Two significant figures: a readable label, and the same value run after run."""
    return float(f"{value:.2g}")


@dataclass(frozen=True)
class Fitted:
    """A candidate after its fit: the model, or why there is none."""

    label: str
    params: ModelParams
    model: Model | None
    fit_cpu_seconds: float
    note: str | None = None


def fit_candidates(
    holdout: Holdout,
    config: RetrainConfig,
    candidates: Sequence[ModelParams],
    *,
    on_iteration: Callable[[int], None] | None = None,
    spent: Callable[[], float] | None = None,
) -> list[Fitted]:
    """Fit each candidate on the holdout's training side, cheapest first, within the budget.

    `spent()` is what the selection has cost so far in the budget's unit (money when a money
    budget is set); by default the CPU seconds of the fits. Once it reaches the budget, the
    rest are recorded as skipped. A refused fit (EASE over its limit) is recorded with why.
    """
    budget = config.selection_budget
    fitted: list[Fitted] = []
    for params in candidates:
        label = describe(params)
        used = spent() if spent else sum(f.fit_cpu_seconds for f in fitted)
        if budget is not None and fitted and used >= budget:
            skipped = f"skipped: the selection budget ({budget:g}) was spent ({used:.3g})"
            fitted.append(Fitted(label, params, None, 0.0, skipped))
            continue
        started = time.process_time()
        try:
            model: Model | None = fit_model(
                holdout.train,
                params,
                events=holdout.train_events,
                on_iteration=on_iteration,
                ease_max_items=config.ease_max_items,
            )
            note: str | None = None
        except EaseTooLarge as exc:
            model, note = None, str(exc)
        except OverBudget:
            raise  # the run's cost ceiling stops the whole retrain, not one candidate
        except Exception as exc:  # recorded with why; the selection goes on
            log.warning("candidate %s failed: %s", label, exc)
            model, note = None, f"failed: {type(exc).__name__}: {exc}"
        fitted.append(Fitted(label, params, model, time.process_time() - started, note))
    return fitted


def score_candidates(
    fitted: Sequence[Fitted], holdout: Holdout, config: RetrainConfig
) -> Selection:
    """Score every fitted candidate on the holdout; the best on the gate metric wins, ties
    to the earlier (cheaper) one. RuntimeError when none could be scored."""
    results: list[CandidateScore] = []
    models: dict[int, Model] = {}
    for candidate in fitted:
        if candidate.model is None:
            results.append(
                CandidateScore(
                    candidate.label,
                    candidate.params,
                    None,
                    candidate.fit_cpu_seconds,
                    0.0,
                    candidate.note,
                )
            )
            continue
        started = time.process_time()
        metrics = score_model(candidate.model, holdout, config.k)
        models[len(results)] = candidate.model
        results.append(
            CandidateScore(
                candidate.label,
                candidate.params,
                metrics,
                candidate.fit_cpu_seconds,
                time.process_time() - started,
            )
        )
    ranked = [i for i, c in enumerate(results) if c.metrics is not None and c.metrics.users > 0]
    if not ranked:
        raise RuntimeError("no candidate could be scored on the holdout")
    best = max(ranked, key=lambda i: (getattr(results[i].metrics, config.gate_metric), -i))
    return Selection(results, results[best], models[best], config.gate_metric)


def select(
    holdout: Holdout,
    config: RetrainConfig,
    *,
    candidates: Sequence[ModelParams] | None = None,
    spent: Callable[[], float] | None = None,
) -> Selection:
    """fit_candidates then score_candidates (`recsys evaluate`, the quality benchmark);
    `spent` as fit_candidates takes it (money_spent for a money budget)."""
    params = list(candidates or candidate_params(config, holdout))
    fitted = fit_candidates(holdout, config, params, spent=spent)
    return score_candidates(fitted, holdout, config)


def money_spent(
    config: RetrainConfig, price: Price | None, meter: Meter, progress: PhaseProgress
) -> Callable[[], float] | None:
    """What the fitting so far has cost (the phase `progress` runs in, priced), for
    fit_candidates' `spent` when the selection's budget is in money; None otherwise."""
    if config.selection_budget_unit != "money" or config.selection_budget is None:
        return None
    if price is None:
        log.warning("the selection's money budget is not enforced: no price version in force")
        return lambda: 0.0
    budget = RunBudget(price, config.selection_budget, meter.energy)
    return lambda: budget.cost_so_far([], progress)


def _cpu(results: Sequence[CandidateScore]) -> float:
    return sum(c.fit_cpu_seconds + c.evaluate_cpu_seconds for c in results)
