"""What a synthetic shop is: its config (`ShopConfig`) and the two tables it yields.

`Catalog` and `EventLog` are plain parallel numpy arrays so the generator stays vectorised and
the writers can stream them. The small helpers every generator module shares (seeded streams,
string ids, the log's time window) live here too, so the other modules depend on this one
and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
IndexArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

US = 1_000_000  # microseconds per second
DAY_S = 86_400.0  # seconds per day

# Independent random streams per purpose, so a knob of one part does not reshuffle another.
STREAM_CATALOG, STREAM_EVENTS, STREAM_LIFECYCLE, STREAM_DRIFT, STREAM_REPEATS = range(5)


@dataclass(frozen=True)
class ShopConfig:
    """Size, time span, seed and dynamics of a synthetic shop; the same config, the same data.

    The dynamics knobs default to a shop that changes while it is logged, as real ones do, so
    recent events say more about tomorrow than old ones. Set popularity_drift, arrival_share,
    unavailable_share and consumable_share to 0 for a stationary shop (fixed popularity, the
    same items all along, no re-orders).
    """

    n_users: int = 2_000
    n_items: int = 1_000
    n_categories: int = 20
    n_events: int = 100_000  # approximate target; the actual count is within +-10%
    days: int = 60  # time span of the log
    end: datetime = datetime(2026, 1, 1, tzinfo=UTC)  # newest timestamp bound (exclusive)
    seed: int = 0
    # Share of the catalogue retired part-way through the window: marked unavailable, and no
    # event of it after its retirement (its category's other items take its views).
    unavailable_share: float = 0.05
    zipf_exponent: float = 1.1  # item popularity skew within a category
    # Spread (standard deviation, natural log) of each item's attractiveness around its Zipf
    # base at any moment: 1.0 moves a typical item by up to a factor of e either way, enough to
    # reorder the top of a category (rank 1 and 2 differ by a factor of ~2). 0: fixed.
    popularity_drift: float = 1.0
    # How long a trend lasts: the time, in days, over which a deviation from the base fades by
    # a factor of e (mean reversion). A week: last week's hits are not last month's.
    drift_days: float = 7.0
    # Share of the catalogue introduced part-way through the window: no event before arrival.
    arrival_share: float = 0.15
    # Share of items that are consumables, which users who bought them buy again later.
    consumable_share: float = 0.2
    # Chance that a consumable purchase is followed by another (a chain: p / (1 - p) repeats
    # per first purchase on average, fewer where the window's end cuts the chain).
    repurchase_prob: float = 0.5
    repurchase_days: float = 10.0  # mean time between two purchases of a consumable, in days

    def __post_init__(self) -> None:
        """Reject configs the generator cannot honour, early and with a clear message."""
        for name in ("n_users", "n_items", "n_categories", "n_events", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.n_categories > self.n_items:
            raise ValueError("n_categories must not exceed n_items")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if not 0.0 <= self.unavailable_share < 1.0:
            raise ValueError("unavailable_share must be in [0, 1)")
        if self.zipf_exponent < 0:
            raise ValueError("zipf_exponent must be >= 0")
        if not 0.0 <= self.popularity_drift <= 5.0:
            raise ValueError("popularity_drift must be in [0, 5]")
        if not self.drift_days > 0:  # also rejects NaN
            raise ValueError("drift_days must be > 0")
        if not 0.0 <= self.arrival_share < 1.0:
            raise ValueError("arrival_share must be in [0, 1)")
        if self.arrival_share + self.unavailable_share >= 1.0:
            raise ValueError("arrival_share + unavailable_share must be < 1")
        if not 0.0 <= self.consumable_share <= 1.0:
            raise ValueError("consumable_share must be in [0, 1]")
        if not 0.0 <= self.repurchase_prob <= 0.9:  # beyond, n_events is no longer a target
            raise ValueError("repurchase_prob must be in [0, 0.9]")
        if not self.repurchase_days > 0:  # also rejects NaN
            raise ValueError("repurchase_days must be > 0")
        if self.end.tzinfo is None or self.end.utcoffset() is None:
            raise ValueError("end must be timezone-aware")


@dataclass(frozen=True)
class Catalog:
    """Items of the shop: id, category and whether it can be sold now (parallel arrays)."""

    item_ids: np.ndarray  # str, e.g. "sku-000123"
    categories: np.ndarray  # str, e.g. "cat-07"
    available: np.ndarray  # bool; False for items retired during the window

    def __len__(self) -> int:
        """Number of items."""
        return len(self.item_ids)


@dataclass(frozen=True)
class EventLog:
    """Interaction events as parallel arrays, sorted by time (oldest first)."""

    event_ids: np.ndarray  # str, unique, e.g. "ev-s0-0000001"
    user_ids: np.ndarray  # str, e.g. "u-000045"
    item_ids: np.ndarray  # str
    types: np.ndarray  # str, one of EVENT_TYPES
    values: np.ndarray  # float64, NaN except for ratings (1..5)
    occurred_at: np.ndarray  # datetime64[us], UTC as naive numpy time

    def __post_init__(self) -> None:
        """Catch columns of different lengths before they silently misalign rows."""
        n = len(self.event_ids)
        columns = (self.user_ids, self.item_ids, self.types, self.values, self.occurred_at)
        if any(len(col) != n for col in columns):
            raise ValueError("EventLog columns must all have the same length")

    def __len__(self) -> int:
        """Number of events."""
        return len(self.event_ids)


def make_ids(prefix: str, n: int, min_width: int) -> np.ndarray:
    """Zero-padded string ids `prefix + 000123` for 0..n-1, as a numpy str array."""
    width = max(min_width, len(str(max(n - 1, 0))))
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width))


def make_rng(seed: int, stream: int) -> np.random.Generator:
    """The generator of one purpose (a STREAM_* constant) for `seed`."""
    return np.random.default_rng([seed, stream])


def span_s(config: ShopConfig) -> float:
    """Length of the log's window in seconds."""
    return config.days * DAY_S


def window_us(config: ShopConfig) -> tuple[int, int]:
    """Start and end of the log as microseconds since the Unix epoch (UTC)."""
    end = config.end.astimezone(UTC).replace(tzinfo=None)
    end_us = int(np.datetime64(end, "us").astype(np.int64))
    return end_us - config.days * 86_400 * US, end_us
