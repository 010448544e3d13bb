"""What a hyper-parameter search explores, how its trials are judged, what it answers: pure.

Each knob is searched on a log scale because each acts multiplicatively: doubling the
factors or halving the regularization is the same kind of step wherever it starts.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from shared.model_spec import ModelParams

METRICS = ("ndcg", "map", "precision", "recall")
ALGORITHMS = ("als", "bpr")
Range = tuple[float, float]


class Suggester(Protocol):
    """The part of optuna.Trial the space uses (a FixedTrial in tests)."""

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = ...) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = ...) -> float: ...


@dataclass(frozen=True)
class SearchSpace:
    """Log-scale ranges of one algorithm's knobs; `alpha` is ALS's, `learning_rate` BPR's."""

    algorithm: str
    factors: tuple[int, int]
    iterations: tuple[int, int]
    regularization: Range
    alpha: Range | None = None
    learning_rate: Range | None = None

    @classmethod
    def default(cls, algorithm: str = "als") -> SearchSpace:
        """Wide ranges around ModelParams' defaults (ALS 64 factors, 15 sweeps, lambda 5)."""
        if algorithm == "als":
            # lambda is in confidence units (see ModelParams): from ~0 to tens of interactions.
            return cls("als", (8, 256), (5, 50), (0.01, 100.0), alpha=(0.1, 50.0))
        if algorithm == "bpr":
            return cls("bpr", (8, 256), (20, 400), (1e-4, 1.0), learning_rate=(1e-3, 0.3))
        raise ValueError(f"algorithm must be one of {ALGORITHMS}")

    def suggest(self, trial: Suggester) -> dict[str, Any]:
        """One point of the space, as the ModelParams fields the search sets."""
        chosen: dict[str, Any] = {
            "algorithm": self.algorithm,
            "factors": trial.suggest_int("factors", *self.factors, log=True),
            "iterations": trial.suggest_int("iterations", *self.iterations, log=True),
            "regularization": trial.suggest_float("regularization", *self.regularization, log=True),
        }
        if self.alpha is not None:
            chosen["alpha"] = trial.suggest_float("alpha", *self.alpha, log=True)
        if self.learning_rate is not None:
            chosen["learning_rate"] = trial.suggest_float(
                "learning_rate", *self.learning_rate, log=True
            )
        return chosen

    def point_of(self, params: ModelParams) -> dict[str, Any] | None:
        """Optuna's parameters that reproduce `params`; None for another algorithm's params."""
        if params.algorithm != self.algorithm:
            return None
        return {key: value for key, value in chosen_fields(params).items() if key != "algorithm"}

    def including(self, params: ModelParams) -> SearchSpace:
        """The space widened just enough to hold `params` (trial 0 must lie inside it)."""
        point = self.point_of(params)
        if point is None:
            return self
        widened: dict[str, Any] = {
            name: (min(bounds[0], point[name]), max(bounds[1], point[name]))
            for name in point
            if (bounds := getattr(self, name)) is not None
        }
        return replace(self, **widened)


def chosen_fields(params: ModelParams) -> dict[str, Any]:
    """The fields a search chooses, with per-algorithm defaults resolved: what it saves."""
    chosen: dict[str, Any] = {
        "algorithm": params.algorithm,
        "factors": params.factors,
        "iterations": params.effective_iterations,
        "regularization": params.effective_regularization,
    }
    if params.algorithm == "als":
        chosen["alpha"] = params.alpha
    else:
        chosen["learning_rate"] = params.learning_rate
    return chosen


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
