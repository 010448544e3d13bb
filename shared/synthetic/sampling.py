"""Who browses the synthetic shop and when: user tastes, activity and session times.

Also the grouped sampler the generator draws every categorical choice with (a category per
view from the user's taste, an item per view from its category's popularity): one flat
cumulative table and one `searchsorted`, so millions of draws from thousands of different
distributions stay a few vectorised numpy calls.
"""

from __future__ import annotations

import numpy as np

from shared.synthetic.config import (
    DAY_S,
    US,
    FloatArray,
    IndexArray,
    IntArray,
    ShopConfig,
)

__all__ = [
    "capped_gaps",
    "grouped_cumulative",
    "sample_grouped",
    "user_tastes",
    "view_times",
    "views_per_user",
]

_TASTE_CONCENTRATION = 2.0  # total Dirichlet mass: small, so a user likes 1-3 categories
_EXPLORE_SHARE = 0.05  # share of views drawn uniformly over categories (random browsing)
_ACTIVITY_SIGMA = 1.3  # log-normal spread of user activity (heavy tail)
_MEAN_SESSION_VIEWS = 5.0  # geometric session length, in views
_GAP_VIEW = (2.0, 45.0, 600.0)  # seconds between views of a session: floor, mean extra, cap
# Relative traffic by UTC hour of day: quiet at night, peak in the evening.
_HOURLY_TRAFFIC = (
    0.35, 0.25, 0.18, 0.15, 0.15, 0.2, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0,
    1.0, 1.0, 0.95, 0.95, 1.0, 1.1, 1.25, 1.4, 1.5, 1.4, 1.0, 0.6,
)  # fmt: skip


def grouped_cumulative(weights: FloatArray, group_sizes: IntArray) -> FloatArray:
    """Per-group normalised cumulative weights, offset by the group index (monotone overall).

    Sampling group g is then `searchsorted(result, g + u, "right")` with u in [0, 1); an entry
    of weight 0 is never drawn, except the last of a group whose weights are all 0.
    """
    n_groups = len(group_sizes)
    ends = np.cumsum(group_sizes)
    starts = ends - group_sizes
    total = np.cumsum(weights)
    before = np.concatenate([[0.0], total])[starts]
    group_total = total[ends - 1] - before
    group_of = np.repeat(np.arange(n_groups), group_sizes)
    safe_total = np.where(group_total > 0, group_total, 1.0)
    cum = (total - before[group_of]) / safe_total[group_of]
    cum[ends - 1] = 1.0  # exact upper bound per group, regardless of rounding
    return cum + group_of


def sample_grouped(cum: FloatArray, groups: IntArray, rng: np.random.Generator) -> IndexArray:
    """Draw one flat position per entry of `groups` from a `grouped_cumulative` table."""
    pos = np.searchsorted(cum, groups + rng.random(len(groups)), side="right")
    return np.minimum(pos, len(cum) - 1)


def user_tastes(n_users: int, n_categories: int, rng: np.random.Generator) -> FloatArray:
    """Category preference per user: sparse Dirichlet around skewed category popularity."""
    base = 1.0 / np.arange(1, n_categories + 1) ** 0.6
    base = base[rng.permutation(n_categories)]
    alpha = _TASTE_CONCENTRATION * base / base.sum()
    raw = rng.gamma(alpha, size=(n_users, n_categories))
    sums = raw.sum(axis=1, keepdims=True)
    dirichlet = np.where(sums > 0, raw / np.where(sums > 0, sums, 1.0), 1.0 / n_categories)
    return (1.0 - _EXPLORE_SHARE) * dirichlet + _EXPLORE_SHARE / n_categories


def views_per_user(n_users: int, n_views: int, rng: np.random.Generator) -> IntArray:
    """Heavy-tailed activity: a floor of a few views each, the rest log-normally spread."""
    floor = int(np.clip(n_views // (4 * n_users), 1, 3))
    rest = max(n_views - floor * n_users, 0)
    weights = rng.lognormal(0.0, _ACTIVITY_SIGMA, size=n_users)
    extra = rng.multinomial(rest, weights / weights.sum())
    return (floor + extra).astype(np.int64)


def capped_gaps(n: int, spec: tuple[float, float, float], rng: np.random.Generator) -> FloatArray:
    """Waiting times in seconds: floor + exponential, capped so sessions stay bounded."""
    floor, mean_extra, cap = spec
    return np.minimum(floor + rng.exponential(mean_extra, size=n), cap)


def _session_starts(
    bounds_s: FloatArray, config: ShopConfig, start_us: int, rng: np.random.Generator
) -> FloatArray:
    """Session start (seconds after the log start) with a daily traffic cycle.

    A session whose views span `bound` starts no later than `span - bound`: views stay < end.
    """
    n_hours = config.days * 24
    first_hour = (start_us // (3_600 * US)) % 24
    hourly = np.asarray(_HOURLY_TRAFFIC)[(first_hour + np.arange(n_hours)) % 24]
    cum = np.cumsum(hourly) / hourly.sum()
    hour = np.minimum(np.searchsorted(cum, rng.random(len(bounds_s)), side="right"), n_hours - 1)
    fraction = (hour + rng.random(len(bounds_s))) / n_hours
    return fraction * np.maximum(config.days * DAY_S - bounds_s, 0.0)


def view_times(
    views_per_user: IntArray, config: ShopConfig, start_us: int, rng: np.random.Generator
) -> tuple[IntArray, FloatArray]:
    """User of each view and its time: views grouped in sessions with short gaps."""
    n_views = int(views_per_user.sum())
    user = np.repeat(np.arange(len(views_per_user), dtype=np.int64), views_per_user)
    first_of_user = np.zeros(n_views, dtype=bool)
    first_of_user[np.cumsum(views_per_user)[:-1]] = True
    first_of_user[0] = True
    new_session = first_of_user | (rng.random(n_views) < 1.0 / _MEAN_SESSION_VIEWS)
    session = np.cumsum(new_session) - 1
    gaps = np.where(new_session, 0.0, capped_gaps(n_views, _GAP_VIEW, rng))
    elapsed = np.cumsum(gaps)
    offset = elapsed - elapsed[np.flatnonzero(new_session)][session]
    n_sessions = int(session[-1]) + 1
    last_offset = np.zeros(n_sessions)
    np.maximum.at(last_offset, session, offset)
    starts = _session_starts(last_offset, config, start_us, rng)
    return user, starts[session] + offset
