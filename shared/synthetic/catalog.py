"""The shop's items: the catalogue it sells, and each item's life in the log's window.

`generate_catalog` is what callers see (ids, categories, availability). `item_traits` adds what
only the event generator needs: when an item arrived or was retired, and whether it is a
consumable that users buy again. It is derived from the config and the catalogue alone, so a
test can recompute it to check the log against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.synthetic.config import (
    STREAM_CATALOG,
    STREAM_LIFECYCLE,
    BoolArray,
    Catalog,
    FloatArray,
    IndexArray,
    ShopConfig,
    make_ids,
    make_rng,
    span_s,
)

__all__ = ["ItemTraits", "generate_catalog", "item_traits"]

# When, as fractions of the window, arrivals and retirements happen (uniformly in between):
# late enough that the item clearly was not there / was there, early enough to matter.
_ARRIVAL_RANGE = (0.05, 0.9)
_RETIREMENT_RANGE = (0.1, 0.95)


@dataclass(frozen=True)
class ItemTraits:
    """Per catalogue item (parallel to `Catalog`): lifetime in the window, consumable or not."""

    arrive_s: FloatArray  # seconds after the window's start; 0.0 when there from the start
    retire_s: FloatArray  # seconds after the window's start; inf when never retired
    consumable: BoolArray  # bought again now and then by a user who bought it


def _first_of_each(codes: np.ndarray, candidates: BoolArray) -> IndexArray:
    """Index of the first candidate item of each category code that has one."""
    positions = np.flatnonzero(candidates)
    _, first = np.unique(codes[positions], return_index=True)
    return positions[first]


def generate_catalog(config: ShopConfig) -> Catalog:
    """Build the item catalogue: uneven category sizes, a few items retired (unavailable).

    Each category keeps at least one available item, so every category has something to view
    until the end of the log.
    """
    rng = make_rng(config.seed, STREAM_CATALOG)
    n, c = config.n_items, config.n_categories
    size_weights = rng.dirichlet(np.full(c, 4.0))
    codes = np.concatenate([np.arange(c), rng.choice(c, size=n - c, p=size_weights)])
    rng.shuffle(codes)
    keep = np.ones(n, dtype=bool)
    keep[_first_of_each(codes, keep)] = False  # the category's anchor stays available
    candidates = np.flatnonzero(keep)
    n_unavailable = min(round(config.unavailable_share * n), len(candidates))
    available = np.ones(n, dtype=bool)
    available[rng.choice(candidates, size=n_unavailable, replace=False)] = False
    return Catalog(
        item_ids=make_ids("sku-", n, 6),
        categories=make_ids("cat-", c, 2)[codes],
        available=available,
    )


def item_traits(config: ShopConfig, catalog: Catalog) -> ItemTraits:
    """Arrival and retirement times and the consumable flag of each item of `catalog`.

    Unavailable items are the retired ones. Arrivals are drawn among available items, sparing
    the first available item of each category, so no category is ever empty of live items.
    """
    rng = make_rng(config.seed, STREAM_LIFECYCLE)
    n, span = len(catalog), span_s(config)
    available = np.asarray(catalog.available, dtype=bool)
    _, codes = np.unique(np.asarray(catalog.categories), return_inverse=True)

    retire_s = np.full(n, np.inf)
    retire_s[~available] = span * rng.uniform(*_RETIREMENT_RANGE, size=int((~available).sum()))

    may_arrive = available.copy()
    may_arrive[_first_of_each(codes, available)] = False
    candidates = np.flatnonzero(may_arrive)
    n_arriving = min(round(config.arrival_share * n), len(candidates))
    arrive_s = np.zeros(n)
    arriving = rng.choice(candidates, size=n_arriving, replace=False)
    arrive_s[arriving] = span * rng.uniform(*_ARRIVAL_RANGE, size=n_arriving)

    consumable = rng.random(n) < config.consumable_share
    return ItemTraits(arrive_s=arrive_s, retire_s=retire_s, consumable=consumable)
