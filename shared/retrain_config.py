"""Settings -> the typed pieces of one retrain (confidence, model, evaluation, gate).

Shared: a trigger (the admin API, the CLI) records this snapshot on the run it creates."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from shared.confidence import ConfidenceSettings
from shared.model_spec import ModelParams
from shared.serving_strategy import ServingStrategy
from shared.settings import Settings


class Overrides(Protocol):
    """Model and serving fields chosen at runtime (offline.retrain_overrides' newest row)."""

    @property
    def model(self) -> dict[str, Any]: ...

    @property
    def serving(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RetrainConfig:
    """Everything that decides what a retrain produces; recorded in the run and manifest."""

    window_days: int | None
    min_user_events: int
    min_item_events: int
    confidence: ConfidenceSettings
    model: ModelParams
    k: int
    test_fraction: float
    max_eval_users: int
    gate_metric: str
    gate_tolerance: float
    final_fit: bool
    keep_versions: int
    serving: ServingStrategy = field(default_factory=ServingStrategy)
    # "auto": select among candidates on the holdout (offline/selection.py); otherwise the
    # pinned algorithm (model.algorithm), still compared with the popularity baselines.
    algorithm: str = "auto"
    selection_budget: float | None = None  # in selection_budget_unit; None: no bound
    selection_budget_unit: str = "cpu_seconds"  # or "money" (priced with the price book)
    ease_max_items: int = 10_000

    def to_dict(self) -> dict[str, Any]:
        plain = asdict(self)
        plain["confidence"] = self.confidence.to_dict()
        plain["model"] = self.model.to_dict()
        plain["serving"] = self.serving.to_dict()
        return plain


def retrain_config(settings: Settings, stored: Overrides | None = None) -> RetrainConfig:
    """Read the retrain settings; unset model knobs keep ModelParams' defaults.

    `stored` (the newest `retrain_settings` row: the tradeoff lab's or the tuner's choice)
    overrides the model and serving fields it names; the environment fills the rest.
    """
    config = _from_environment(settings)
    if stored is None:
        return config
    model = ModelParams.from_dict({**asdict(config.model), **stored.model})
    serving = ServingStrategy.from_dict({**config.serving.to_dict(), **stored.serving})
    # A stored choice that names its algorithm (the lab's, the tuner's) pins it.
    algorithm = model.algorithm if "algorithm" in stored.model else config.algorithm
    return replace(config, model=model, serving=serving, algorithm=algorithm)


def _from_environment(settings: Settings) -> RetrainConfig:
    defaults = ModelParams()
    model = ModelParams(
        algorithm="als" if settings.algorithm == "auto" else settings.algorithm,
        factors=settings.factors,
        iterations=settings.iterations,
        regularization=settings.regularization,
        alpha=_or(settings.alpha, defaults.alpha),
        scaling=settings.scaling or defaults.scaling,
        learning_rate=settings.learning_rate,
        random_state=settings.random_state,
        num_threads=settings.training_threads,
        neighbours=settings.neighbours,
    )
    confidence = ConfidenceSettings(
        weights={
            "view": settings.weight_view,
            "click": settings.weight_click,
            "add_to_cart": settings.weight_add_to_cart,
            "purchase": settings.weight_purchase,
        },
        ratings=settings.ratings,
        rating_neutral=settings.rating_neutral,
        rating_weight=settings.rating_weight,
        half_life_days=settings.half_life_days,
    )
    return RetrainConfig(
        window_days=settings.train_window_days,
        min_user_events=settings.min_user_events,
        min_item_events=settings.min_item_events,
        confidence=confidence,
        model=model,
        k=settings.eval_k,
        test_fraction=settings.eval_test_fraction,
        max_eval_users=settings.eval_max_users,
        gate_metric=settings.gate_metric,
        gate_tolerance=settings.gate_tolerance,
        final_fit=settings.final_fit,
        keep_versions=settings.keep_versions,
        serving=ServingStrategy(name=settings.serving_strategy),
        algorithm=settings.algorithm,
        selection_budget=_budget(settings),
        selection_budget_unit="money" if settings.selection_budget_cost else "cpu_seconds",
        ease_max_items=settings.ease_max_items,
    )


def _budget(settings: Settings) -> float | None:
    """The selection's bound: money when a money budget is set, else CPU seconds."""
    if settings.selection_budget_cost is not None:
        return settings.selection_budget_cost
    return settings.selection_budget_seconds


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
