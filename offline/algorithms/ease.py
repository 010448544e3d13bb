"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"), closed form.

B = I - P / diag(P) with P = (X^T X + l2 I)^-1, diagonal 0: a dense items x items matrix,
scored like item-kNN's (scores = user_rows @ B). It needs n_items^2 memory and n_items^3 time,
so catalogues over a limit are refused up front with EaseTooLarge, before anything is allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

__all__ = ["MAX_ITEMS_SETTING", "EaseCost", "EaseTooLarge", "ease_cost", "fit_ease"]

MAX_ITEMS_SETTING = "RECSYS_EASE_MAX_ITEMS"  # the setting named in EaseTooLarge's message
_BLOCK_ENTRIES = 1 << 24  # entries per block of Gram rows / mirrored triangle (~200 MB sparse)


class EaseTooLarge(ValueError):
    """The catalogue has more items than EASE's dense item x item matrix is allowed."""


@dataclass(frozen=True)
class EaseCost:
    """What fit_ease needs: peak bytes while fitting, bytes of the result, floating-point ops."""

    peak_bytes: int
    model_bytes: int
    flops: int


def ease_cost(n_items: int, *, cooccurrences: int = 0) -> EaseCost:
    """Estimate fit_ease's memory and work for n_items (n) items, from its actual steps.

    Memory: one float64 n x n buffer (8 n^2) holds the Gram matrix, then in place its Cholesky
    factor and inverse P; on top of it, first one sparse block of Gram rows (12 bytes per entry,
    at most min(n^2, 2^24) entries), later the float32 result (4 n^2). So the peak is
    8 n^2 + max(12 * block, 4 n^2), i.e. 12 n^2 for large n; the copies of the input (about 24
    bytes per interaction) come on top. model_bytes = 4 n^2.
    Flops: 2 * cooccurrences for the sparse Gram product, where cooccurrences = sum over users of
    (items of the user)^2, which depends on the data (0 leaves it out; usually small next to the
    rest); n^3 / 3 for the Cholesky factorisation (potrf), 2 n^3 / 3 for the inverse from it
    (potri); n^2 for the column scaling. Total 2 * cooccurrences + n^3 + n^2.
    """
    if n_items < 0 or cooccurrences < 0:
        raise ValueError("n_items and cooccurrences must not be negative")
    n = int(n_items)
    block = min(n * n, _block_rows(n) * n)
    model_bytes = 4 * n * n
    peak_bytes = 8 * n * n + max(12 * block, model_bytes)
    return EaseCost(peak_bytes, model_bytes, 2 * int(cooccurrences) + n**3 + n**2)


def fit_ease(
    user_items: sp.csr_matrix, *, l2: float = 500.0, max_items: int = 10_000
) -> np.ndarray:
    """EASE's item x item weights B, float32 n_items x n_items, diagonal 0 (never self).

    `user_items` is users x items; its values are used as given (Steck used binary data; a
    confidence works the same way). Cost (see ease_cost): about 12 bytes * n_items^2 at the
    peak and n_items^3 flops, so memory scales as n_items^2 and time as n_items^3; 10,000
    items is about 1.1 GiB and a trillion flops. The solve is in float64 through a Cholesky
    factorisation (LAPACK potrf/potri, in place), which X^T X + l2 I (positive definite) allows
    and which is about twice as cheap as a general inverse. l2 defaults to 500, the order of
    magnitude Steck found best on implicit-feedback data (hundreds up to about a thousand);
    the shop's holdout picks among candidates. Refuses l2 <= 0 (ValueError) and more than
    `max_items` items (EaseTooLarge), both before allocating anything.
    """
    if not (l2 > 0 and math.isfinite(l2)):
        raise ValueError(f"l2 must be a positive finite number, got {l2}")
    n_items = int(user_items.shape[1])
    if n_items > max_items:
        raise EaseTooLarge(_too_large_message(n_items, max_items))
    if n_items == 0:
        return np.zeros((0, 0), dtype=np.float32)
    p = _gram(sp.csr_matrix(user_items, dtype=np.float64))
    p[np.diag_indices(n_items)] += l2
    _invert_spd_in_place(p)
    return _weights_from_inverse(p)


def _too_large_message(n_items: int, max_items: int) -> str:
    """One line: what EASE would need, this catalogue's size, the limit, and what to do."""
    gib = ease_cost(n_items).peak_bytes / 2**30
    return (
        f"EASE needs a dense {n_items:,} x {n_items:,} item matrix (about {gib:,.1f} GiB while "
        f"fitting); this catalogue has {n_items:,} items, over {MAX_ITEMS_SETTING}="
        f"{max_items:,}: use item-kNN or ALS, or raise the limit"
    )


def _block_rows(n: int) -> int:
    """Rows per block so a block of an n-column matrix has at most _BLOCK_ENTRIES entries."""
    return max(1, min(n, _BLOCK_ENTRIES // max(n, 1)))


def _gram(x: sp.csr_matrix) -> np.ndarray:
    """Dense float64 X^T X, built a block of rows at a time (no full sparse Gram in memory)."""
    n = x.shape[1]
    gram = np.zeros((n, n), dtype=np.float64)
    columns = x.tocsc()
    step = _block_rows(n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = sp.csr_matrix(columns[:, start:stop].T @ x)
        block.toarray(out=gram[start:stop])  # C-contiguous rows; gram starts at zero
    return gram


def _invert_spd_in_place(a: np.ndarray) -> None:
    """Overwrite the symmetric positive definite C-ordered `a` with its full inverse."""
    # a.T is the same symmetric matrix in Fortran order, so LAPACK works in a's own memory.
    factor, info = lapack.dpotrf(a.T, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: X^T X + l2 I is not positive definite (potrf {info})")
    inverse, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0 or not np.shares_memory(inverse, a):
        raise np.linalg.LinAlgError(f"EASE: inverse from the Cholesky factor failed ({info})")
    _mirror_lower_to_upper(a)  # potri filled a.T's upper triangle: a's lower one


def _mirror_lower_to_upper(a: np.ndarray) -> None:
    """Copy the lower triangle of square `a` onto its upper one, a block of rows at a time."""
    n = a.shape[0]
    step = _block_rows(n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        a[start:stop, stop:] = a[stop:, start:stop].T
        square = a[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        square[upper] = square.T[upper]


def _weights_from_inverse(p: np.ndarray) -> np.ndarray:
    """B = -P / diag(P) off the diagonal, 0 on it, written straight into float32."""
    weights = np.empty(p.shape, dtype=np.float32)
    np.divide(p, -np.diagonal(p).copy(), out=weights, casting="same_kind")
    np.fill_diagonal(weights, 0.0)
    return weights
