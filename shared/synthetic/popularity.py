"""Which item each view lands on: the user's taste picks a category, popularity an item in it.

Popularity is not stationary, because in real shops it is not: each item's attractiveness is
a Zipf weight (its rank within its category) times a log-space random walk over the window,
and an item draws views only while it is in the catalogue (after its arrival, before its
retirement). The window is cut into epochs; each (epoch, category) pair is one group of a
single grouped cumulative table, so choosing an item for every view is one `searchsorted`.
"""

from __future__ import annotations

import numpy as np

from shared.synthetic.catalog import ItemTraits
from shared.synthetic.config import (
    STREAM_DRIFT,
    FloatArray,
    IndexArray,
    IntArray,
    ShopConfig,
    make_rng,
    span_s,
)
from shared.synthetic.sampling import grouped_cumulative, sample_grouped

__all__ = ["choose_items", "n_epochs"]

_EPOCHS_PER_DAY = 4  # popularity and the live catalogue change every 6 hours
_MAX_EPOCHS = 512
_MAX_TABLE = 1 << 22  # epochs x items entries of the weight table (32 MiB of float64)


def n_epochs(config: ShopConfig, n_items: int) -> int:
    """How many epochs the window is cut into, bounded so the weight table stays small."""
    return int(max(1, min(config.days * _EPOCHS_PER_DAY, _MAX_EPOCHS, _MAX_TABLE // n_items)))


def _drift(config: ShopConfig, n_epochs: int, n_items: int) -> FloatArray:
    """Log-attractiveness deviation per epoch and item: a mean-reverting random walk.

    An Ornstein-Uhlenbeck process, started in its stationary law: each item's deviation has
    spread `popularity_drift` at any time and forgets itself over `drift_days`, so trends
    come and go around the item's base popularity instead of drifting off for good.
    """
    if config.popularity_drift == 0:
        return np.zeros((n_epochs, n_items))
    rng = make_rng(config.seed, STREAM_DRIFT)
    keep = np.exp(-config.days / n_epochs / config.drift_days)  # memory kept per epoch
    shocks = rng.normal(0.0, config.popularity_drift, (n_epochs, n_items))
    shocks[1:] *= np.sqrt(1.0 - keep**2)
    out = np.empty_like(shocks)
    out[0] = shocks[0]
    for k in range(1, n_epochs):  # epochs are few (<= 512): the loop runs over rows of items
        out[k] = keep * out[k - 1] + shocks[k]
    return out


def choose_items(
    user: IntArray,
    t_s: FloatArray,
    tastes: FloatArray,
    codes: IntArray,
    traits: ItemTraits,
    config: ShopConfig,
    rng: np.random.Generator,
) -> IndexArray:
    """Item of each view: category by the user's taste, item by its popularity at that time.

    An item counts as live in an epoch only if it is in the catalogue for the whole epoch, so
    a view never lands before its item's arrival or after its retirement (a category with no
    live item at all, possible only with a hand-made catalogue, yields views the caller drops).
    """
    n_items, n_cat = len(codes), tastes.shape[1]
    taste_cum = grouped_cumulative(tastes.ravel(), np.full(len(tastes), n_cat, dtype=np.int64))
    category = sample_grouped(taste_cum, user, rng) - user * n_cat

    order = np.lexsort((rng.random(n_items), codes))  # grouped, random rank inside
    sizes = np.bincount(codes, minlength=n_cat).astype(np.int64)
    rank = np.arange(n_items) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    log_zipf = -config.zipf_exponent * np.log1p(rank.astype(np.float64))

    k = n_epochs(config, n_items)
    epoch_s = span_s(config) / k
    edges = np.arange(k + 1) * epoch_s
    arrive, retire = traits.arrive_s[order], traits.retire_s[order]
    live = (arrive <= edges[:-1, None]) & (retire >= edges[1:, None])  # epochs x items
    log_w = log_zipf + _drift(config, k, n_items)
    log_w -= log_w.max(axis=1, keepdims=True)  # exp stays in range whatever the drift
    weights = np.where(live, np.exp(log_w), 0.0)

    epoch = np.minimum((t_s // epoch_s).astype(np.int64), k - 1)
    cum = grouped_cumulative(weights.ravel(), np.tile(sizes, k))
    position = sample_grouped(cum, epoch * n_cat + category, rng) - epoch * n_items
    return order[position]
