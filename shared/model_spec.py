"""The model spec: which algorithm and hyper-parameters a version was trained with.

`ModelParams.to_dict` is what a run and a version's manifest record; the API reads it back to
serve and fold in exactly as training did. Pure data: imports only `shared.confidence`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from shared.confidence import BM25_B, BM25_K1, SCALINGS

__all__ = [
    "ALGORITHMS",
    "FACTOR_ALGORITHMS",
    "ITEM_ITEM_ALGORITHMS",
    "SIMILARITIES",
    "ModelParams",
    "model_kind",
]

FACTOR_ALGORITHMS = ("als", "bpr")  # implicit's matrix factorisation: user and item factors
ITEM_ITEM_ALGORITHMS = ("item_knn", "ease")  # an items x items matrix; users are their rows
ALGORITHMS = (*FACTOR_ALGORITHMS, *ITEM_ITEM_ALGORITHMS, "popularity")
SIMILARITIES = ("cosine", "bm25")  # item-kNN's neighbour similarity (implicit)
# Per-algorithm defaults for the fields left as None (each uses them in its own units):
# ALS's ridge weight (see below), BPR's SGD decay, EASE's l2 on the item Gram matrix
# (Steck 2019 found a few hundred right for implicit data; the shop's holdout picks).
_DEFAULT_REGULARIZATION = {"als": 5.0, "bpr": 0.01, "ease": 500.0}
_DEFAULT_ITERATIONS = {"als": 15, "bpr": 100}


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

    algorithm: str = "als"  # one of ALGORITHMS
    factors: int = 64
    iterations: int | None = None  # None: ALS 15, BPR 100 (implicit's BPR default)
    regularization: float | None = None  # None: ALS 5.0 (see above), BPR 0.01 (SGD decay)
    learning_rate: float = 0.01  # BPR only
    alpha: float = 2.0  # ALS confidence scaling strength
    scaling: str = "log"  # ALS: "log" | "bm25" | "none" (see confidence.scale_confidence)
    bm25_k1: float = BM25_K1  # the "bm25" scaling's K1 and B, kept so fold-in scales alike
    bm25_b: float = BM25_B
    neighbours: int = 200  # item_knn: neighbours kept per item
    similarity: str = "cosine"  # item_knn: "cosine" | "bm25"
    recency_half_life_days: float | None = None  # popularity: None counts the whole window
    random_state: int = 42
    num_threads: int = 0  # implicit's own threads; 0 = all cores
    use_gpu: bool = False  # implicit's CUDA models; fit() refuses where there is none

    def __post_init__(self) -> None:
        """Refuse parameters implicit would misread or silently clamp."""
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}")
        if self.factors < 1 or (self.iterations is not None and self.iterations < 1):
            raise ValueError("factors and iterations must be >= 1")
        if self.regularization is not None and self.regularization < 0:
            raise ValueError("regularization must be >= 0")
        if self.alpha <= 0 or self.learning_rate <= 0 or self.num_threads < 0:
            raise ValueError("alpha and learning_rate must be > 0, num_threads >= 0")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}")
        if self.neighbours < 1:
            raise ValueError("neighbours must be >= 1")
        if self.recency_half_life_days is not None and not self.recency_half_life_days > 0:
            raise ValueError("recency_half_life_days must be > 0 (or None: the whole window)")
        if self.use_gpu and self.algorithm not in FACTOR_ALGORITHMS:
            raise ValueError("use_gpu: only ALS and BPR have a GPU fit")

    @property
    def kind(self) -> str:
        """ "factors", "item_item" or "popularity": how a version of it is scored."""
        return model_kind(self.algorithm)

    @property
    def effective_iterations(self) -> int:
        """Iterations (ALS sweeps or BPR epochs) this run uses; 1 for the closed forms."""
        return self.iterations or _DEFAULT_ITERATIONS.get(self.algorithm, 1)

    @property
    def effective_regularization(self) -> float:
        """The regularization this run uses."""
        if self.regularization is None:
            return _DEFAULT_REGULARIZATION.get(self.algorithm, 0.0)
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


def model_kind(algorithm: str) -> str:
    """How a version of `algorithm` is scored: "factors", "item_item" or "popularity"."""
    if algorithm in FACTOR_ALGORITHMS:
        return "factors"
    if algorithm in ITEM_ITEM_ALGORITHMS:
        return "item_item"
    if algorithm == "popularity":
        return "popularity"
    raise ValueError(f"algorithm must be one of {ALGORITHMS}")
