"""Candidates: model settings x serving strategies; the default grid and `--candidates` files.

A candidate names only what it changes; everything else comes from the retrain settings in
force, so the baseline (those settings unchanged) is one candidate among the others and the
comparison is like for like.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shared.model_spec import FACTOR_ALGORITHMS, ModelParams, model_kind
from shared.serving_strategy import STRATEGIES, ServingStrategy, refusal

# Fields that do not change what a model is (threads) are left out of a candidate's identity.
_NOT_SETTINGS = ("num_threads",)
# A small grid around the defaults: ALS with fewer and more factors, fewer iterations, less
# regularisation; BPR; the strong simple baselines real logs reward (item-kNN, EASE where the
# catalogue fits, popularity over the window). Each is served by every strategy its kind can
# serve (shared.serving_strategy.refusal): factor models by all, item-item models by exact,
# precomputed and batched, popularity by exact.
DEFAULT_MODELS: tuple[dict[str, Any], ...] = (
    {"algorithm": "als", "factors": 16},
    {"algorithm": "als", "factors": 64},
    {"algorithm": "als", "factors": 128},
    {"algorithm": "als", "factors": 64, "iterations": 8, "regularization": 1.0},
    {"algorithm": "bpr", "factors": 64, "iterations": None, "regularization": None},
    {"algorithm": "item_knn", "similarity": "cosine", "neighbours": 200},
    {"algorithm": "ease", "regularization": None},
    {"algorithm": "popularity", "recency_half_life_days": None},
)


@dataclass(frozen=True)
class Candidate:
    """Resolved model and serving settings (full dicts) and a short human label."""

    model: dict[str, Any]
    serving: dict[str, Any]
    label: str
    baseline: bool = False

    @property
    def key(self) -> str:
        """Identity for de-duplication: the settings, not the label."""
        return json.dumps({"model": self._model(), "serving": self.serving}, sort_keys=True)

    @property
    def model_key(self) -> str:
        """Identity of the model alone: candidates that share it can share one fit."""
        return json.dumps(self._model(), sort_keys=True)

    def _model(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k not in _NOT_SETTINGS}

    def params(self) -> ModelParams:
        return ModelParams.from_dict(self.model)

    def strategy(self) -> ServingStrategy:
        return ServingStrategy.from_dict(self.serving)


def resolve(
    base_model: ModelParams,
    base_serving: ServingStrategy,
    model: dict[str, Any],
    serving: dict[str, Any],
    *,
    label: str | None = None,
) -> Candidate:
    """A candidate from partial settings over the base ones; ValueError on bad values.

    Unknown model keys are refused: a typo ("factor") would otherwise measure the base
    settings under another name.
    """
    unknown = sorted(set(model) - set(base_model.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown model settings: {', '.join(unknown)}")
    merged = {**_plain(base_model), **model}
    if model.get("algorithm", base_model.algorithm) != base_model.algorithm:
        # per-algorithm defaults (iterations, regularization) must not leak across algorithms
        for name in ("iterations", "regularization"):
            if name not in model:
                merged[name] = None
    params = ModelParams.from_dict(merged)
    strategy = ServingStrategy.from_dict({**base_serving.to_dict(), **serving})
    resolved = params.to_dict()
    return Candidate(resolved, strategy.to_dict(), label or describe(resolved, strategy.name))


def _plain(params: ModelParams) -> dict[str, Any]:
    """The params as given (None where a per-algorithm default applies)."""
    return {name: getattr(params, name) for name in params.__dataclass_fields__}


def describe(model: dict[str, Any], strategy: str) -> str:
    """e.g. "als f64 i15 r5 / exact", "item_knn cosine k200 / precomputed", "ease r500 /
    exact", "popularity window / exact"."""
    algorithm = model["algorithm"]
    if algorithm == "item_knn":
        what = f"item_knn {model['similarity']} k{model['neighbours']}"
    elif algorithm == "ease":
        what = f"ease r{model['regularization']:g}"
    elif algorithm == "popularity":
        half_life = model.get("recency_half_life_days")
        what = "popularity window" if half_life is None else f"popularity {half_life:g}d"
    else:
        where = " gpu" if model.get("use_gpu") else ""
        what = (
            f"{algorithm}{where} f{model['factors']} i{model['iterations']} "
            f"r{model['regularization']:g}"
        )
    return f"{what} / {strategy}"


def baseline_candidate(model: ModelParams, serving: ServingStrategy) -> Candidate:
    """The settings in force, unchanged."""
    candidate = resolve(model, serving, {}, {})
    return replace(candidate, label=candidate.label + " (current)", baseline=True)


def default_grid(
    base_model: ModelParams,
    base_serving: ServingStrategy,
    strategies: Sequence[str] = STRATEGIES,
    *,
    gpu: bool = False,
) -> list[Candidate]:
    """DEFAULT_MODELS x the given strategies (each strategy with its default knobs), leaving
    out the pairs a model's kind cannot serve; with `gpu` (implicit's CUDA build sees a GPU),
    each factor model trained on the GPU as well, served exactly: where it trains changes the
    training cost (GPU-hours priced), not the serving."""
    grid = [
        resolve(base_model, base_serving, model, {"name": name})
        for model, name in itertools.product(DEFAULT_MODELS, strategies)
        if refusal(name, model_kind(model["algorithm"])) is None
    ]
    if gpu:
        grid += [
            resolve(base_model, base_serving, {**model, "use_gpu": True}, {"name": "exact"})
            for model in DEFAULT_MODELS
            if model["algorithm"] in FACTOR_ALGORITHMS
        ]
    return grid


def parse_candidates(
    data: Any, base_model: ModelParams, base_serving: ServingStrategy
) -> list[Candidate]:
    """Candidates from JSON: a list of {"model", "serving", "label"?}, or an object with
    "models" and "strategies" lists (their product). A strategy may be a name or a dict."""
    if isinstance(data, dict) and set(data) <= {"models", "strategies"}:
        models = data.get("models") or [{}]
        strategies = [_strategy(s) for s in data.get("strategies") or [{}]]
        pairs: Iterable[tuple[Any, Any, Any]] = (
            (m, s, None) for m, s in itertools.product(models, strategies)
        )
    elif isinstance(data, list):
        pairs = (
            (c.get("model", {}), _strategy(c.get("serving", {})), c.get("label")) for c in data
        )
    else:
        raise ValueError('expected a list of candidates or {"models": [...], "strategies": [...]}')
    candidates = []
    for model, serving, label in pairs:
        if not isinstance(model, dict) or not isinstance(serving, dict):
            raise ValueError("each model and serving entry must be a JSON object")
        candidates.append(resolve(base_model, base_serving, model, serving, label=label))
    if not candidates:
        raise ValueError("no candidates given")
    return candidates


def _strategy(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


def load_candidates(
    path: Path, base_model: ModelParams, base_serving: ServingStrategy
) -> list[Candidate]:
    """parse_candidates of a JSON file."""
    return parse_candidates(json.loads(path.read_text()), base_model, base_serving)


def by_model(candidates: Iterable[tuple[int, Candidate]]) -> list[list[int]]:
    """The candidate ids grouped by model settings (first appearance order, ids in order):
    each group is fitted once and its model served by each of the group's strategies."""
    groups: dict[str, list[int]] = {}
    for candidate_id, candidate in candidates:
        groups.setdefault(candidate.model_key, []).append(candidate_id)
    return list(groups.values())


def with_baseline(candidates: Sequence[Candidate], baseline: Candidate) -> list[Candidate]:
    """The candidates without duplicates, the baseline always in (marked, first if new)."""
    unique = {baseline.key: baseline}
    for candidate in candidates:
        unique.setdefault(candidate.key, candidate)
    return list(unique.values())
