"""Pure: a user's vector from their interactions by the ALS least-squares solve ("fold-in").

For a user with confidences c_i on items i (p_i = 1 where c_i > 0, a dislike c_i < 0 counts as
p_i = 0 with weight |c_i|) and item factors Y, ALS puts the user at

    x = (Y^T Y + lambda I + sum_i (|c_i| - 1) y_i y_i^T)^-1  sum_{c_i > 0} c_i y_i,

the same system implicit solves per user in each sweep (and in `recalculate_user`). Y^T Y is
computed once per model version; one user then costs a solve of f x f, well under a
millisecond for f = 64. Only numpy: the online path never imports implicit.

For BPR models the same solve is a heuristic: BPR does not fit squared error, so the vector
it gives is "where ALS would put this user against these item vectors". It ranks items close
to what the user touched, which is what a fold-in needs; BPR's item-bias column is left out
of the solve and the user's weight on it is fixed to 1, as BPR's own user vectors hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.confidence import TYPE_CODES, ConfidenceSettings, EventColumns, event_confidence
from shared.model_spec import ModelParams

__all__ = [
    "FoldInModel",
    "event_raw_confidence",
    "fold_in",
    "fold_in_events",
    "pair_confidence",
    "seen_raw_confidence",
]

_GRAM_ROWS = 1 << 15  # rows per float64 block of Y^T Y (16 MiB at f = 64)
# BPR's regularization is an SGD decay, not a ridge weight: BPR models use ALS's default.
_ALS_REGULARIZATION = ModelParams(algorithm="als").effective_regularization


@dataclass(frozen=True)
class FoldInModel:
    """What the solve needs from one model version, built once at load."""

    item_factors: np.ndarray  # n_items x f, float32, read-only (the model's own array)
    gram: np.ndarray  # Y^T Y + lambda I over the solved columns, float64
    bias_column: bool  # BPR: the last column is the item bias, users hold a 1 there
    scaling: str
    alpha: float
    bm25_k1: float  # the version's own K1 (ModelParams, in its manifest)

    @classmethod
    def build(cls, item_factors: np.ndarray, params: ModelParams) -> FoldInModel:
        """Precompute Y^T Y + lambda I (f x f) for a version's item factors and params."""
        bias = params.algorithm == "bpr"
        regularization = _ALS_REGULARIZATION if bias else params.effective_regularization
        solved = _solved(item_factors, bias)
        gram = _gram(solved) + regularization * np.eye(solved.shape[1])
        gram.flags.writeable = False
        return cls(item_factors, gram, bias, params.scaling, params.alpha, params.bm25_k1)


def _gram(y: np.ndarray) -> np.ndarray:
    """Y^T Y in float64, in row blocks so a large catalogue needs no float64 copy of Y."""
    gram = np.zeros((y.shape[1], y.shape[1]))
    for lo in range(0, y.shape[0], _GRAM_ROWS):
        block = y[lo : lo + _GRAM_ROWS].astype(np.float64)
        gram += block.T @ block
    return gram


def _solved(factors: np.ndarray, bias: bool) -> np.ndarray:
    """The columns the solve works on: all of them, or all but BPR's bias column."""
    return factors[:, :-1] if bias else factors


def pair_confidence(
    model: FoldInModel, raw: np.ndarray, *, user_items: int, n_items: int
) -> np.ndarray:
    """Scale summed raw event confidence per item as training did (sign kept, 0 stays 0).

    "none" and "log" match shared.confidence.scale_confidence exactly. "bm25" needs corpus
    statistics a model version does not keep, so it is approximated: the item's length norm
    is taken as average (1, whatever B is) and the user's idf comes from `user_items` among
    `n_items`.
    """
    raw = np.asarray(raw, dtype=np.float64)
    magnitude, sign = np.abs(raw), np.sign(raw)
    if model.scaling == "none":
        return model.alpha * raw
    if model.scaling == "log":
        return sign * (1.0 + model.alpha * np.log1p(magnitude))
    idf = np.log(max(n_items, 1)) - np.log1p(max(user_items, 1))
    k1 = model.bm25_k1
    bm25 = magnitude * (k1 + 1.0) / (k1 + magnitude) * idf
    return sign * model.alpha * bm25


def fold_in(
    model: FoldInModel,
    items: np.ndarray,
    *,
    before: np.ndarray,
    after: np.ndarray,
    trained: np.ndarray | None = None,
) -> np.ndarray:
    """The user's vector (float32, like the model's) once their confidences go `before` -> `after`.

    `items` are item rows; `before`/`after` their scaled confidence (0 = no interaction).
    Without `trained` this is the plain solve on `after` (`before` is ignored). With it, the
    solve is anchored on the trained vector: the right-hand side becomes A_before x_trained
    plus what changed, so with no change the trained vector comes back exactly and new
    events move it from there, instead of from a re-solve of approximate old confidences.
    """
    y = _solved(model.item_factors, model.bias_column)[np.asarray(items, dtype=np.int64)]
    y = y.astype(np.float64)
    after = np.asarray(after, dtype=np.float64)
    if trained is None:
        a_after = model.gram + _outer_sum(y, _weight(after))
        rhs = y.T @ np.maximum(after, 0.0)
    else:
        before = np.asarray(before, dtype=np.float64)
        anchor = _solved(np.asarray(trained, dtype=np.float64)[None, :], model.bias_column)[0]
        a_before = model.gram + _outer_sum(y, _weight(before))
        moved = after != before  # usually a handful of the user's items: update only those
        a_after = a_before + _outer_sum(y[moved], _weight(after[moved]) - _weight(before[moved]))
        changed = np.maximum(after, 0.0) - np.maximum(before, 0.0)
        rhs = a_before @ anchor + y.T @ changed
    vector = np.linalg.solve(a_after, rhs)
    if model.bias_column:
        vector = np.append(vector, 1.0)
    return vector.astype(np.float32)


def _weight(confidence: np.ndarray) -> np.ndarray:
    """What each pair adds to the user's system: |c| - 1, and nothing without an interaction."""
    return np.where(confidence != 0, np.abs(confidence) - 1.0, 0.0)


def _outer_sum(y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """sum_i weight_i y_i y_i^T."""
    return y.T @ (weight[:, None] * y)


def seen_raw_confidence(confidence: ConfidenceSettings) -> float:
    """Raw confidence assumed for a trained (seen) pair: the artifact keeps only that it exists.

    One event of the lightest positive type (a view, by default): a lower bound for most
    pairs, so new events weigh relatively a little more than the exact solve would give them.
    """
    positive = [w for w in confidence.weights.values() if w > 0]
    return min(positive) if positive else max(confidence.rating_weight, 1.0)


def fold_in_events(
    model: FoldInModel,
    *,
    seen: np.ndarray,
    rows: np.ndarray,
    raw: np.ndarray,
    seen_raw: float,
    trained: np.ndarray | None,
) -> np.ndarray | None:
    """The vector after new events (item `rows`, raw confidence `raw`) on top of `seen` items.

    Seen pairs count `seen_raw` each and new events add to a pair's sum before scaling, as
    training summed them. With a trained vector the solve is anchored on it (see fold_in).
    None when nothing changed, when a user without a trained vector has no positive pair, or
    when the system cannot be solved (the caller then falls back to the trained vector).
    """
    items, where = np.unique(np.concatenate([seen, rows]), return_inverse=True)
    old = np.zeros(len(items))
    old[where[: len(seen)]] = seen_raw
    new = old + np.bincount(where[len(seen) :], weights=raw, minlength=len(items))
    if np.array_equal(new, old) or (trained is None and not (new > 0).any()):
        return None
    n_items = len(model.item_factors)
    before = pair_confidence(model, old, user_items=len(items), n_items=n_items)
    after = pair_confidence(model, new, user_items=len(items), n_items=n_items)
    try:
        vector = fold_in(model, items, before=before, after=after, trained=trained)
    except np.linalg.LinAlgError:  # only with confidences below 1 ("none"/"bm25" scaling)
        return None
    return vector if np.isfinite(vector).all() else None


def event_raw_confidence(
    types: Sequence[str],
    values: Sequence[float | None],
    occurred_at: Sequence[float],
    confidence: ConfidenceSettings,
    *,
    reference_time: float,
) -> np.ndarray:
    """Each event's raw confidence, by the same function that weighed the training events."""
    n = len(types)
    columns = EventColumns(
        user_index=np.zeros(n, np.int32),
        item_index=np.zeros(n, np.int32),
        user_ids=np.array([""]),
        item_ids=np.array([""]),
        type_code=np.array([TYPE_CODES[t] for t in types], dtype=np.int8),
        value=np.array([np.nan if v is None else v for v in values], dtype=np.float64),
        occurred_at=np.asarray(occurred_at, dtype=np.float64),
    )
    return event_confidence(columns, confidence, reference_time=reference_time)
