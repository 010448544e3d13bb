"""The synthetic shop's event log: sessions of views feeding a purchase funnel, with re-orders.

Each view (who, when: `sampling`; which item: `popularity`) may go on to a click, a cart, a
purchase and a rating. Purchases of consumables come back later as re-orders (view, click,
cart, purchase again), so in this log, as in real ones, buying an item does not always end a
user's interest in it. The log is a snapshot at `end`: nothing happens after it, and nothing
happens to an item outside its life in the catalogue.
"""

from __future__ import annotations

import numpy as np

from shared.confidence import EVENT_TYPES
from shared.synthetic.catalog import ItemTraits, item_traits
from shared.synthetic.config import (
    DAY_S,
    STREAM_EVENTS,
    STREAM_REPEATS,
    US,
    BoolArray,
    Catalog,
    EventLog,
    FloatArray,
    IntArray,
    ShopConfig,
    make_ids,
    make_rng,
    span_s,
    window_us,
)
from shared.synthetic.popularity import choose_items
from shared.synthetic.sampling import capped_gaps, user_tastes, view_times, views_per_user

__all__ = ["generate_events"]

_FUNNEL = ("view", "click", "add_to_cart", "purchase", "rating")
_CODES = tuple(EVENT_TYPES.index(kind) for kind in _FUNNEL)  # funnel step -> type code
_STEP_PURCHASE = _FUNNEL.index("purchase")
_P_CLICK_BASE, _P_CLICK_FAV = 0.22, 0.16  # click | view, plus a bonus on the favourite category
_P_CART, _P_PURCHASE, _P_RATING = 0.30, 0.50, 0.20
_GAP_STEP = (  # seconds from the previous funnel step: floor, mean extra, cap
    (2.0, 15.0, 120.0),  # view -> click
    (5.0, 60.0, 900.0),  # click -> add_to_cart
    (10.0, 120.0, 1_800.0),  # add_to_cart -> purchase
    (30.0, 300.0, 3_600.0),  # purchase -> rating
)
_RATING_P_FAV = (0.02, 0.04, 0.12, 0.37, 0.45)  # 1..5 stars on the user's favourite category
_RATING_P_OTHER = (0.10, 0.17, 0.33, 0.27, 0.13)  # 1..5 stars elsewhere
_REORDER_STEPS = 4  # a re-order is a view, click, cart and purchase (no second rating)
_REORDER_GAP_SHAPE = 4.0  # gamma shape of the time between purchases: a rough cycle, not chaos

Steps = list[tuple[IntArray, FloatArray]]  # per funnel step: source view index, time in s


def _funnel(favourite: BoolArray, t_s: FloatArray, rng: np.random.Generator) -> Steps:
    """Per step (view, click, cart, purchase, rating): source view index and time in seconds."""
    idx = np.arange(len(t_s), dtype=np.int64)
    t = t_s
    steps = [(idx, t)]
    p_click = _P_CLICK_BASE + _P_CLICK_FAV * favourite
    for step, gap in enumerate(_GAP_STEP):
        p = p_click if step == 0 else (_P_CART, _P_PURCHASE, _P_RATING)[step - 1]
        keep = rng.random(len(idx)) < p
        idx, t = idx[keep], t[keep] + capped_gaps(int(keep.sum()), gap, rng)
        steps.append((idx, t))
    return steps


def _reorders(
    user: IntArray,
    item: IntArray,
    t_purchase: FloatArray,
    traits: ItemTraits,
    config: ShopConfig,
) -> tuple[IntArray, IntArray, list[FloatArray]]:
    """Repeat purchases of consumables: user, item and the times of each re-order's steps.

    A purchase of a consumable is followed by another with chance `repurchase_prob`, after
    about `repurchase_days`; that one may be followed in turn. Re-orders stop at the log's end
    and at the item's retirement.
    """
    rng = make_rng(config.seed, STREAM_REPEATS)
    users, items = [user[:0]], [item[:0]]
    times = [[t_purchase[:0]] * _REORDER_STEPS]
    mean_gap_s = config.repurchase_days * DAY_S
    while len(user):
        again = traits.consumable[item] & (rng.random(len(user)) < config.repurchase_prob)
        user, item = user[again], item[again]
        gap = rng.gamma(_REORDER_GAP_SHAPE, mean_gap_s / _REORDER_GAP_SHAPE, len(user))
        t_view = t_purchase[again] + gap
        live = t_view < np.minimum(span_s(config), traits.retire_s[item])
        user, item, t = user[live], item[live], [t_view[live]]
        for spec in _GAP_STEP[: _REORDER_STEPS - 1]:
            t.append(t[-1] + capped_gaps(len(user), spec, rng))
        users.append(user)
        items.append(item)
        times.append(t)
        t_purchase = t[-1]
    return (
        np.concatenate(users),
        np.concatenate(items),
        [np.concatenate([t[step] for t in times]) for step in range(_REORDER_STEPS)],
    )


def _in_life(traits: ItemTraits, item: IntArray, t_s: FloatArray) -> BoolArray:
    """Whether each `item` is in the catalogue at time `t_s` (seconds after the start)."""
    return (t_s >= traits.arrive_s[item]) & (t_s < traits.retire_s[item])


def _ratings(favourite: BoolArray, rng: np.random.Generator) -> FloatArray:
    """Star ratings 1..5 as floats, higher on the user's favourite category."""
    u = rng.random(len(favourite))
    fav = np.searchsorted(np.cumsum(_RATING_P_FAV), u, side="right")
    other = np.searchsorted(np.cumsum(_RATING_P_OTHER), u, side="right")
    return np.minimum(np.where(favourite, fav, other), 4).astype(np.float64) + 1.0


def _views_for(config: ShopConfig) -> int:
    """Organic views to draw so the whole log comes out near `n_events`."""
    p_click = _P_CLICK_BASE + 0.5 * _P_CLICK_FAV
    per_view = 1.0
    for p in (_P_RATING, _P_PURCHASE, _P_CART, p_click):
        per_view = 1.0 + p * per_view  # expected funnel events per view
    # Re-orders: a chain of repeats, each fitting before the window's end with the chance that
    # a gap of mean g (in windows) fits after a purchase at a uniform time, 1 - g (1 - e^(-1/g))
    # for an exponential gap: close enough for the gamma one.
    g = config.repurchase_days / config.days
    fits = 1.0 - g * (1.0 - np.exp(-1.0 / g))
    q = config.repurchase_prob * fits
    purchases = p_click * _P_CART * _P_PURCHASE
    per_view += purchases * config.consumable_share * q / (1.0 - q) * _REORDER_STEPS
    return max(round(config.n_events / per_view), 1)


def generate_events(config: ShopConfig, catalog: Catalog) -> EventLog:
    """Generate the event log for `catalog`: sessions of views feeding a purchase funnel."""
    rng = make_rng(config.seed, STREAM_EVENTS)
    start_us, end_us = window_us(config)
    cat_labels, codes = np.unique(np.asarray(catalog.categories), return_inverse=True)
    codes = codes.astype(np.int64)
    traits = item_traits(config, catalog)
    tastes = user_tastes(config.n_users, len(cat_labels), rng)

    n_views = _views_for(config)
    user, t_s = view_times(views_per_user(config.n_users, n_views, rng), config, start_us, rng)
    item = choose_items(user, t_s, tastes, codes, traits, config, rng)
    favourite = codes[item] == np.argmax(tastes, axis=1)[user]
    steps = _funnel(favourite, t_s, rng)

    bought, t_bought = steps[_STEP_PURCHASE]  # re-orders follow purchases that made it to the log
    first = _in_life(traits, item[bought], t_s[bought]) & _in_life(traits, item[bought], t_bought)
    bought, t_bought = bought[first], t_bought[first]
    re_user, re_item, re_times = _reorders(user[bought], item[bought], t_bought, traits, config)
    n_organic = len(user)
    re_idx = n_organic + np.arange(len(re_user), dtype=np.int64)
    steps += [(re_idx, t) for t in re_times]
    user, item = np.concatenate([user, re_user]), np.concatenate([item, re_item])
    favourite = np.concatenate([favourite, np.zeros(len(re_user), dtype=bool)])

    src = np.concatenate([idx for idx, _ in steps])
    t_all = np.concatenate([t for _, t in steps])
    kinds = np.array([*_CODES, *_CODES[:_REORDER_STEPS]])  # one per entry of `steps`
    kinds = np.repeat(kinds, [len(idx) for idx, _ in steps])
    values = np.full(len(src), np.nan)
    rating_rows = kinds == EVENT_TYPES.index("rating")
    values[rating_rows] = _ratings(favourite[src[rating_rows]], rng)

    # The log is a snapshot at `end`: funnel steps that would happen later are cut off; so is
    # anything outside the item's life in the catalogue (and the steps of such a view).
    in_life = _in_life(traits, item[src], t_all)
    view_rows = np.flatnonzero(kinds == _CODES[0])
    view_live = np.zeros(len(user), dtype=bool)
    view_live[src[view_rows]] = in_life[view_rows]
    times_us = start_us + np.floor(t_all * US).astype(np.int64)
    organic_view = (kinds == _CODES[0]) & (src < n_organic)
    keep = np.flatnonzero(in_life & view_live[src] & (organic_view | (times_us < end_us)))
    times_us = np.minimum(times_us, end_us - 1)  # organic views: guard against float rounding
    order = keep[np.argsort(times_us[keep], kind="stable")]  # ties keep funnel order
    src, kinds, values, times_us = src[order], kinds[order], values[order], times_us[order]
    return EventLog(
        event_ids=make_ids(f"ev-s{config.seed}-", len(src), 7),
        user_ids=make_ids("u-", config.n_users, 6)[user[src]],
        item_ids=np.asarray(catalog.item_ids)[item[src]],
        types=np.asarray(EVENT_TYPES)[kinds],
        values=values,
        occurred_at=times_us.astype("datetime64[us]"),
    )
