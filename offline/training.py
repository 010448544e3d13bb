"""Fit an implicit matrix-factorisation model (ALS by default, BPR selectable) and rank exactly.

implicit's CPU models by default, always with BLAS limited to one thread around the fit
(implicit parallelises over users itself; a threaded BLAS inside that is much slower); its
CUDA models with `use_gpu` where implicit was built with CUDA (nothing requires one).
Factors come back as plain float32 numpy arrays with scores = user_factors @ item_factors.T.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from offline.dataset import InteractionMatrix
from shared.confidence import scale_confidence
from shared.model_spec import ModelParams

__all__ = ["TrainedFactors", "fit", "gpu_available"]


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
    data = scale_confidence(
        csr,
        method=params.scaling,
        alpha=params.alpha,
        bm25_k1=params.bm25_k1,
        bm25_b=params.bm25_b,
    )
    with warnings.catch_warnings():
        # implicit warns that OpenBLAS may use several threads; fit() limits it to one.
        warnings.filterwarnings("ignore", message="OpenBLAS is configured", category=RuntimeWarning)
        model = AlternatingLeastSquares(alpha=1.0, **common)  # alpha applied by the scaling
    return model, data
