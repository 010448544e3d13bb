"""Fit an implicit matrix-factorisation model (ALS by default, BPR selectable) and rank exactly.

implicit's CPU models by default, always with BLAS limited to one thread around the fit
(implicit parallelises over users itself; a threaded BLAS inside that is much slower); its
CUDA models with `use_gpu` where implicit was built with CUDA (nothing requires one).
Factors come back as plain float32 numpy arrays with scores = user_factors @ item_factors.T.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from offline.dataset import SCALINGS, InteractionMatrix, scale_confidence

__all__ = ["ModelParams", "TrainedFactors", "fit", "gpu_available", "top_k"]

_ALGORITHMS = ("als", "bpr")
# Per-algorithm defaults for the fields left as None (the two use them in different units).
_DEFAULT_REGULARIZATION = {"als": 5.0, "bpr": 0.01}
_DEFAULT_ITERATIONS = {"als": 15, "bpr": 100}
_SCORE_BUDGET = 1 << 24  # floats per scoring chunk (64 MiB of float32 scores)


@dataclass(frozen=True)
class ModelParams:
    """Hyper-parameters of one training run; `to_dict` is what the manifest records.

    How the ALS defaults were chosen (on principle, not tuned on any data set): ALS minimises
    sum c_ui (p_ui - x_u.y_i)^2 over observed pairs + sum (x_u.y_i)^2 over the rest
    + lambda (|x|^2 + |y|^2), so lambda is measured in the same units as the confidence c:
    scaling every c by s is the same as dividing lambda by s; they must be chosen together.
    - Confidence is log-compressed, c = 1 + alpha log(1 + r) (Hu, Koren & Volinsky 2008):
      summed event weights are heavy-tailed (repeat views, bots), and linear confidence lets
      a few pairs dominate. With alpha = 2 one view gives c = 2.4, a view-click-cart-purchase
      funnel (weight 15) c = 6.5, a pair viewed 100 times c = 10: every observed pair >= 1,
      as implicit's solver assumes (unobserved pairs weigh 1).
    - lambda then acts as a prior worth a couple of typical interactions (c ~ 2.5 each): a
      user or item seen once or twice is pulled toward zero (scores near the popularity
      baseline) instead of being fit exactly, while well-observed ones are data-dominated.
      implicit's default 0.01 is ~1/250 of a single view here: effectively unregularised,
      which overfits the many one- or two-event users a shop has.
    The right values for a given shop come from sweeping them on its own time-split holdout.
    """

    algorithm: str = "als"  # "als" | "bpr"
    factors: int = 64
    iterations: int | None = None  # None: ALS 15, BPR 100 (implicit's BPR default)
    regularization: float | None = None  # None: ALS 5.0 (see above), BPR 0.01 (SGD decay)
    learning_rate: float = 0.01  # BPR only
    alpha: float = 2.0  # ALS confidence scaling strength
    scaling: str = "log"  # ALS: "log" | "bm25" | "none" (see dataset.scale_confidence)
    random_state: int = 42
    num_threads: int = 0  # implicit's own threads; 0 = all cores
    use_gpu: bool = False  # implicit's CUDA models; fit() refuses where there is none

    def __post_init__(self) -> None:
        """Refuse parameters implicit would misread or silently clamp."""
        if self.algorithm not in _ALGORITHMS:
            raise ValueError(f"algorithm must be one of {_ALGORITHMS}")
        if self.factors < 1 or (self.iterations is not None and self.iterations < 1):
            raise ValueError("factors and iterations must be >= 1")
        if self.regularization is not None and self.regularization < 0:
            raise ValueError("regularization must be >= 0")
        if self.alpha <= 0 or self.learning_rate <= 0 or self.num_threads < 0:
            raise ValueError("alpha and learning_rate must be > 0, num_threads >= 0")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}")

    @property
    def effective_iterations(self) -> int:
        """Iterations (ALS sweeps or BPR epochs) this run uses."""
        return self.iterations or _DEFAULT_ITERATIONS[self.algorithm]

    @property
    def effective_regularization(self) -> float:
        """The regularization this run uses."""
        if self.regularization is None:
            return _DEFAULT_REGULARIZATION[self.algorithm]
        return self.regularization

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelParams:
        """Back from `to_dict` (a manifest or version row); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def to_dict(self) -> dict[str, Any]:
        """Plain values with the per-algorithm defaults resolved."""
        return {
            **asdict(self),
            "iterations": self.effective_iterations,
            "regularization": self.effective_regularization,
        }


@dataclass(frozen=True)
class TrainedFactors:
    """Learned factors; for BPR the last column is the item bias (users hold a 1 there)."""

    user_factors: np.ndarray  # float32, n_users x f
    item_factors: np.ndarray  # float32, n_items x f
    params: ModelParams


def fit(
    matrix: InteractionMatrix | sp.csr_matrix,
    params: ModelParams,
    *,
    on_iteration: Callable[[int], None] | None = None,
) -> TrainedFactors:
    """Fit on a users x items confidence matrix; `on_iteration(n)` runs after iteration n.

    An exception raised by `on_iteration` stops the fit and propagates (for cancellation).
    ALS sees the scaled confidence; BPR sees positive entries as plain "liked" (negative
    entries, dislikes, are left out: implicit's BPR would read them as likes).
    """
    csr = sp.csr_matrix(matrix.matrix if isinstance(matrix, InteractionMatrix) else matrix)
    if csr.nnz == 0:
        raise ValueError("cannot fit a model on an empty matrix")
    callback = None
    if on_iteration is not None:
        hook = on_iteration

        def callback(iteration: int, *_: Any) -> None:
            hook(iteration + 1)

    with threadpool_limits(1, "blas"):
        model, data = _model_and_data(csr, params)
        model.fit(data, show_progress=False, callback=callback)
    if params.use_gpu:
        model = model.to_cpu()  # factors back in host memory, as numpy arrays
    return TrainedFactors(
        user_factors=np.ascontiguousarray(model.user_factors, dtype=np.float32),
        item_factors=np.ascontiguousarray(model.item_factors, dtype=np.float32),
        params=params,
    )


def gpu_available() -> bool:
    """Whether implicit was built with CUDA and sees a GPU (imports implicit: not in the API)."""
    import implicit.gpu

    return bool(implicit.gpu.HAS_CUDA)


def _model_and_data(csr: sp.csr_matrix, params: ModelParams) -> tuple[Any, sp.csr_matrix]:
    """implicit's model (CPU, or CUDA with use_gpu) for these params and the matrix it sees."""
    common: dict[str, Any] = {
        "factors": params.factors,
        "regularization": params.effective_regularization,
        "iterations": params.effective_iterations,
        "random_state": params.random_state,
        "dtype": np.float32,
    }
    if params.use_gpu:
        if not gpu_available():
            raise ValueError("use_gpu: implicit has no CUDA build or sees no GPU on this machine")
        from implicit.gpu.als import AlternatingLeastSquares
        from implicit.gpu.bpr import BayesianPersonalizedRanking
    else:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        common["num_threads"] = params.num_threads
    if params.algorithm == "bpr":
        liked = sp.csr_matrix(csr > 0, dtype=np.float32)
        return BayesianPersonalizedRanking(learning_rate=params.learning_rate, **common), liked
    data = scale_confidence(csr, method=params.scaling, alpha=params.alpha)
    with warnings.catch_warnings():
        # implicit warns that OpenBLAS may use several threads; fit() limits it to one.
        warnings.filterwarnings("ignore", message="OpenBLAS is configured", category=RuntimeWarning)
        model = AlternatingLeastSquares(alpha=1.0, **common)  # alpha applied by the scaling
    return model, data


def top_k(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    users: np.ndarray,
    *,
    k: int,
    exclude: sp.csr_matrix | None = None,
    allowed_items: np.ndarray | None = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k items per user: (item indices int64, scores float32), each len(users) x k.

    Items stored in the user's `exclude` row (rows indexed like user_factors) and items not
    in `allowed_items` never appear; rows with fewer eligible items are padded with -1 and
    -inf. Users are scored in chunks so memory stays bounded; the result is deterministic.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    users = np.asarray(users, dtype=np.int64)
    candidates = _candidates(item_factors.shape[0], allowed_items)
    factors = np.ascontiguousarray(item_factors[candidates])
    position = np.full(item_factors.shape[0], -1, dtype=np.int64)
    position[candidates] = np.arange(len(candidates))
    ids = np.full((len(users), k), -1, dtype=np.int64)
    scores = np.full((len(users), k), -np.inf, dtype=np.float32)
    step = chunk_size or max(1, _SCORE_BUDGET // max(len(candidates), 1))
    for lo in range(0, len(users), step):
        chunk = users[lo : lo + step]
        block = np.asarray(user_factors[chunk] @ factors.T, dtype=np.float32)
        if exclude is not None:
            _mask_seen(block, exclude, chunk, position)
        top, top_scores = _best(block, min(k, len(candidates)))
        found = np.isfinite(top_scores)
        ids[lo : lo + len(chunk), : top.shape[1]] = np.where(found, candidates[top], -1)
        scores[lo : lo + len(chunk), : top.shape[1]] = top_scores
    return ids, scores


def _candidates(n_items: int, allowed_items: np.ndarray | None) -> np.ndarray:
    """Sorted distinct item indices that may be recommended."""
    if allowed_items is None:
        return np.arange(n_items, dtype=np.int64)
    allowed = np.unique(np.asarray(allowed_items, dtype=np.int64))
    if len(allowed) and (allowed[0] < 0 or allowed[-1] >= n_items):
        raise IndexError("allowed_items holds an index outside the item factors")
    return allowed


def _mask_seen(
    block: np.ndarray, exclude: sp.csr_matrix, chunk: np.ndarray, position: np.ndarray
) -> None:
    """Set the scores of each user's stored (seen) items to -inf, in place."""
    rows = exclude[chunk]
    row_of = np.repeat(np.arange(len(chunk)), np.diff(rows.indptr))
    column = position[rows.indices]
    hit = column >= 0
    block[row_of[hit], column[hit]] = -np.inf


def _best(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and scores of each row's k highest scores, best first."""
    if k < block.shape[1]:
        part = np.argpartition(block, -k, axis=1)[:, -k:]  # no negated copy of the block
    else:
        part = np.broadcast_to(np.arange(block.shape[1]), block.shape)
    part_scores = np.take_along_axis(block, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    return top, np.take_along_axis(part_scores, order, axis=1)
