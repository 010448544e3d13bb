"""What a hyper-parameter search explores, how its trials are judged, what it answers: pure.

Each algorithm searches its own key knobs: ALS and BPR their factors, iterations and
regularization (with ALS's alpha, BPR's learning rate); item-kNN its neighbours and
similarity; EASE its l2 weight; popularity its recency half-life. Numeric knobs are
searched on a log scale because each acts multiplicatively: doubling the factors, the
neighbours or the half-life is the same kind of step wherever it starts.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from shared.model_spec import ALGORITHMS as MODEL_ALGORITHMS
from shared.model_spec import SIMILARITIES, ModelParams

METRICS = ("ndcg", "map", "precision", "recall")
ALGORITHMS = MODEL_ALGORITHMS
Range = tuple[float, float]
# The knobs each algorithm's search chooses (ModelParams field names), in suggestion order.
KNOBS: dict[str, tuple[str, ...]] = {
    "als": ("factors", "iterations", "regularization", "alpha"),
    "bpr": ("factors", "iterations", "regularization", "learning_rate"),
    "item_knn": ("neighbours", "similarity"),
    "ease": ("regularization",),
    "popularity": ("recency_half_life_days",),
}
_INTEGER_KNOBS = ("factors", "iterations", "neighbours")


class Suggester(Protocol):
    """The part of optuna.Trial the space uses (a FixedTrial in tests)."""

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = ...) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = ...) -> float: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class SearchSpace:
    """The ranges of one algorithm's knobs (log scale); a knob left None is not searched."""

    algorithm: str
    factors: tuple[int, int] | None = None
    iterations: tuple[int, int] | None = None
    regularization: Range | None = None
    alpha: Range | None = None
    learning_rate: Range | None = None
    neighbours: tuple[int, int] | None = None
    similarity: tuple[str, ...] | None = None  # a choice, not a range
    recency_half_life_days: Range | None = None

    @classmethod
    def default(cls, algorithm: str = "als") -> SearchSpace:
        """Wide ranges around ModelParams' defaults.

        ALS: 64 factors, 15 sweeps, lambda 5 (in confidence units, see ModelParams: from ~0 to
        tens of interactions). BPR: implicit's SGD ranges. item-kNN: 10 to 1,000 neighbours
        around 200, cosine or BM25. EASE: l2 from 1 to 10,000 around Steck's few hundred (it
        acts against item counts, so a small shop wants less). Popularity: half-lives from an
        hour to a year.
        """
        if algorithm == "als":
            return cls("als", (8, 256), (5, 50), (0.01, 100.0), alpha=(0.1, 50.0))
        if algorithm == "bpr":
            return cls("bpr", (8, 256), (20, 400), (1e-4, 1.0), learning_rate=(1e-3, 0.3))
        if algorithm == "item_knn":
            return cls("item_knn", neighbours=(10, 1000), similarity=SIMILARITIES)
        if algorithm == "ease":
            return cls("ease", regularization=(1.0, 10_000.0))
        if algorithm == "popularity":
            return cls("popularity", recency_half_life_days=(1.0 / 24.0, 365.0))
        raise ValueError(f"algorithm must be one of {ALGORITHMS}")

    def searched(self) -> tuple[str, ...]:
        """The knobs this space searches, in suggestion order."""
        return tuple(name for name in KNOBS[self.algorithm] if getattr(self, name) is not None)

    def suggest(self, trial: Suggester) -> dict[str, Any]:
        """One point of the space, as the ModelParams fields the search sets."""
        chosen: dict[str, Any] = {"algorithm": self.algorithm}
        for name in self.searched():
            bounds = getattr(self, name)
            if name == "similarity":
                chosen[name] = trial.suggest_categorical(name, list(bounds))
            elif name in _INTEGER_KNOBS:
                chosen[name] = trial.suggest_int(name, *bounds, log=True)
            else:
                chosen[name] = trial.suggest_float(name, *bounds, log=True)
        return chosen

    def point_of(self, params: ModelParams) -> dict[str, Any] | None:
        """Optuna's parameters that reproduce `params`; None for another algorithm's params,
        or for a value no trial can suggest (popularity over the whole window)."""
        if params.algorithm != self.algorithm:
            return None
        point = {name: chosen_fields(params)[name] for name in self.searched()}
        return None if any(value is None for value in point.values()) else point

    def including(self, params: ModelParams) -> SearchSpace:
        """The space widened just enough to hold `params` (trial 0 must lie inside it)."""
        point = self.point_of(params)
        if point is None:
            return self
        widened: dict[str, Any] = {}
        for name, value in point.items():
            bounds = getattr(self, name)
            if name == "similarity":
                widened[name] = bounds if value in bounds else (*bounds, value)
            else:
                widened[name] = (min(bounds[0], value), max(bounds[1], value))
        return replace(self, **widened)


def chosen_fields(params: ModelParams) -> dict[str, Any]:
    """The fields a search of this algorithm chooses, per-algorithm defaults resolved: what it
    saves and applies."""
    resolved = params.to_dict()
    return {
        "algorithm": params.algorithm,
        **{name: resolved[name] for name in KNOBS[params.algorithm]},
    }


def best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed trial with the highest value; the earliest wins a tie (trial 0 first)."""
    done = [t for t in trials if t.get("state") == "complete" and t.get("value") is not None]
    return max(done, key=lambda t: (t["value"], -t["number"]), default=None)


def reference_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed trial of the settings in force, if it finished."""
    for trial in trials:
        if trial.get("reference") and trial.get("state") == "complete":
            return trial
    return None


def beats(best: dict[str, Any] | None, reference: dict[str, Any] | None) -> bool:
    """Whether the best trial is strictly better than the settings in force on the holdout."""
    if best is None or reference is None or best["number"] == reference["number"]:
        return False
    return bool(best["value"] > reference["value"])


def check_budgets(max_trials: int | None, max_cost: float | None, metric: str) -> None:
    """Refuse a search that could never end, or that optimises an unknown metric."""
    if max_trials is None and max_cost is None:
        raise ValueError("give a budget: a number of trials, a cost, or both")
    if max_trials is not None and max_trials < 1:
        raise ValueError("max_trials must be >= 1")
    if max_cost is not None and not max_cost > 0:
        raise ValueError("max_cost must be > 0")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}")


@dataclass(frozen=True)
class TuningResult:
    """How a search ended; `best` and `reference` are trial records as stored in the row."""

    tuning_id: uuid.UUID
    status: str  # done | failed | over_budget
    metric: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    reference: dict[str, Any] | None
    applied: bool
    settings_id: int | None
    cost: float | None
    currency: str | None
    reason: str | None

    @property
    def improvement(self) -> float | None:
        """Best value minus the settings in force's value, on the same holdout."""
        if self.best is None or self.reference is None:
            return None
        return float(self.best["value"] - self.reference["value"])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (for the Celery result and `--json`)."""
        return {**asdict(self), "tuning_id": str(self.tuning_id), "improvement": self.improvement}
