"""How the API answers a version's recommendations: the serving strategy and its knobs.

Chosen per retrain (settings, or the tradeoff lab's choice in `retrain_settings`), built at
export time into the version's artifact where it needs arrays (precomputed lists, an ANN
index, float16 factors), recorded in the manifest, and followed by every API process that
loads the version. So a strategy change is a new version and goes through the normal gate.

- `exact`: score every item per request (the reference; memory bandwidth bound).
- `precomputed`: top-`precomputed_n` lists per active user written at training time, served
  by lookup; users with newer events, or whose filters leave fewer than n, are scored exactly.
- `batched`: concurrent requests wait up to `batch_window_ms` and share one scan of the items.
- `ann`: an approximate inner-product index (HNSW); recall against exact is measured.
- `float16`: item factors stored in half precision (half the bytes read per scan).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

STRATEGIES = ("exact", "precomputed", "batched", "ann", "float16")


@dataclass(frozen=True)
class ServingStrategy:
    name: str = "exact"
    precomputed_n: int = 100  # items kept per user: enough for n=10 after typical filters
    precomputed_users: int | None = None  # most active users first; None: every user
    ann_m: int = 32  # HNSW links per node
    ann_ef_construction: int = 200
    ann_ef_search: int = 128  # candidates examined per query: recall against speed
    batch_window_ms: float = 1.0  # longest a request waits for others to share its scan
    batch_max: int = 64  # users per shared scan

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"serving strategy must be one of {STRATEGIES}, not {self.name!r}")
        if self.precomputed_n < 1 or self.precomputed_n > 1000:
            raise ValueError("precomputed_n must be between 1 and 1000")
        if self.precomputed_users is not None and self.precomputed_users < 1:
            raise ValueError("precomputed_users must be >= 1 (or unset for all users)")
        if min(self.ann_m, self.ann_ef_construction, self.ann_ef_search, self.batch_max) < 1:
            raise ValueError("ann_m, ann_ef_construction, ann_ef_search, batch_max must be >= 1")
        if not 0 <= self.batch_window_ms <= 100:
            raise ValueError("batch_window_ms must be between 0 and 100")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServingStrategy:
        """Back from `to_dict` (a manifest, a settings row); unknown keys are refused."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown serving strategy fields: {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Strategies that need user and item factors: item-item and popularity versions have none.
_FACTOR_STRATEGIES = ("ann", "float16")


def refusal(strategy: str, kind: str) -> str | None:
    """Why a version of this kind ("factors", "item_item", "popularity") cannot be served
    with `strategy`, or None when it can."""
    if kind == "popularity" and strategy != "exact":
        return f"{strategy} has nothing to speed up in a popularity version (one list for all)"
    if kind == "item_item" and strategy in _FACTOR_STRATEGIES:
        return f"{strategy} needs factors; item-kNN and EASE serve exact, precomputed or batched"
    return None


def serving_for(strategy: ServingStrategy, params: Any) -> tuple[ServingStrategy, str]:
    """The strategy a version of `params` (a ModelParams) is built with, and a note for the
    run's reason when the configured one had to give way to exact."""
    why = refusal(strategy.name, params.kind)
    if why is None:
        return strategy, ""
    return ServingStrategy(**{**strategy.to_dict(), "name": "exact"}), f"; served exact: {why}"
