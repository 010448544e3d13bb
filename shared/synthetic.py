"""Seeded generator of a synthetic e-commerce catalogue and event log.

Used by the demo, tests and benchmarks. The data has a planted structure that collaborative
filtering can learn (users like a few categories, item popularity is Zipf-like within a
category, a view -> click -> cart -> purchase -> rating funnel); it does not replace real data.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from shared.confidence import EVENT_TYPES
from shared.events import Event

__all__ = [
    "Catalog",
    "EventLog",
    "ShopConfig",
    "as_events",
    "generate_catalog",
    "generate_events",
    "write_catalog_csv",
    "write_demo_files",
    "write_events_csv",
    "write_events_jsonl",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_VIEW, _CLICK, _CART, _PURCHASE, _RATING = range(5)

_US = 1_000_000  # microseconds per second
_TASTE_CONCENTRATION = 2.0  # total Dirichlet mass: small, so a user likes 1-3 categories
_EXPLORE_SHARE = 0.05  # share of views drawn uniformly over categories (random browsing)
_ACTIVITY_SIGMA = 1.3  # log-normal spread of user activity (heavy tail)
_MEAN_SESSION_VIEWS = 5.0  # geometric session length, in views
_P_CLICK_BASE, _P_CLICK_FAV = 0.22, 0.16  # click | view, plus a bonus on the favourite category
_P_CART, _P_PURCHASE, _P_RATING = 0.30, 0.50, 0.20
_GAP_VIEW = (2.0, 45.0, 600.0)  # seconds between views of a session: floor, mean extra, cap
_GAP_STEP = (  # seconds from the previous funnel step: floor, mean extra, cap
    (2.0, 15.0, 120.0),  # view -> click
    (5.0, 60.0, 900.0),  # click -> add_to_cart
    (10.0, 120.0, 1_800.0),  # add_to_cart -> purchase
    (30.0, 300.0, 3_600.0),  # purchase -> rating
)
_RATING_P_FAV = (0.02, 0.04, 0.12, 0.37, 0.45)  # 1..5 stars on the user's favourite category
_RATING_P_OTHER = (0.10, 0.17, 0.33, 0.27, 0.13)  # 1..5 stars elsewhere
# Relative traffic by UTC hour of day: quiet at night, peak in the evening.
_HOURLY_TRAFFIC = (
    0.35, 0.25, 0.18, 0.15, 0.15, 0.2, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0,
    1.0, 1.0, 0.95, 0.95, 1.0, 1.1, 1.25, 1.4, 1.5, 1.4, 1.0, 0.6,
)  # fmt: skip


@dataclass(frozen=True)
class ShopConfig:
    """Size, time span and seed of a synthetic shop; the same config yields the same data."""

    n_users: int = 2_000
    n_items: int = 1_000
    n_categories: int = 20
    n_events: int = 100_000  # approximate target; the actual count is within +-10%
    days: int = 60  # time span of the log
    end: datetime = datetime(2026, 1, 1, tzinfo=UTC)  # newest timestamp bound (exclusive)
    seed: int = 0
    unavailable_share: float = 0.05  # share of catalogue items marked unavailable
    zipf_exponent: float = 1.1  # item popularity skew within a category

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
        if self.end.tzinfo is None or self.end.utcoffset() is None:
            raise ValueError("end must be timezone-aware")


@dataclass(frozen=True)
class Catalog:
    """Items of the shop: id, category and whether it can be sold now (parallel arrays)."""

    item_ids: np.ndarray  # str, e.g. "sku-000123"
    categories: np.ndarray  # str, e.g. "cat-07"
    available: np.ndarray  # bool

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


# --------------------------------------------------------------------------- catalogue


def _ids(prefix: str, n: int, min_width: int) -> np.ndarray:
    """Zero-padded string ids `prefix + 000123` for 0..n-1, as a numpy str array."""
    width = max(min_width, len(str(max(n - 1, 0))))
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width))


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent generator per purpose, so catalogue and events don't shift each other."""
    return np.random.default_rng([seed, stream])


def generate_catalog(config: ShopConfig) -> Catalog:
    """Build the item catalogue: uneven category sizes, a few items marked unavailable."""
    rng = _rng(config.seed, 0)
    n, c = config.n_items, config.n_categories
    size_weights = rng.dirichlet(np.full(c, 4.0))
    codes = np.concatenate([np.arange(c), rng.choice(c, size=n - c, p=size_weights)])
    rng.shuffle(codes)
    n_unavailable = round(config.unavailable_share * n)
    available = np.ones(n, dtype=bool)
    available[rng.choice(n, size=n_unavailable, replace=False)] = False
    return Catalog(
        item_ids=_ids("sku-", n, 6),
        categories=_ids("cat-", c, 2)[codes],
        available=available,
    )


# --------------------------------------------------------------------------- sampling helpers


def _grouped_cumulative(weights: FloatArray, group_sizes: IntArray) -> FloatArray:
    """Per-group normalised cumulative weights, offset by the group index (monotone overall).

    Sampling group g is then `searchsorted(result, g + u, "right")` with u in [0, 1).
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


def _sample_grouped(
    cum: FloatArray, groups: IntArray, rng: np.random.Generator
) -> npt.NDArray[np.intp]:
    """Draw one flat position per entry of `groups` from a `_grouped_cumulative` table."""
    pos = np.searchsorted(cum, groups + rng.random(len(groups)), side="right")
    return np.minimum(pos, len(cum) - 1)


def _user_tastes(n_users: int, n_categories: int, rng: np.random.Generator) -> FloatArray:
    """Category preference per user: sparse Dirichlet around skewed category popularity."""
    base = 1.0 / np.arange(1, n_categories + 1) ** 0.6
    base = base[rng.permutation(n_categories)]
    alpha = _TASTE_CONCENTRATION * base / base.sum()
    raw = rng.gamma(alpha, size=(n_users, n_categories))
    sums = raw.sum(axis=1, keepdims=True)
    dirichlet = np.where(sums > 0, raw / np.where(sums > 0, sums, 1.0), 1.0 / n_categories)
    return (1.0 - _EXPLORE_SHARE) * dirichlet + _EXPLORE_SHARE / n_categories


def _views_per_user(n_users: int, n_views: int, rng: np.random.Generator) -> IntArray:
    """Heavy-tailed activity: a floor of a few views each, the rest log-normally spread."""
    floor = int(np.clip(n_views // (4 * n_users), 1, 3))
    rest = max(n_views - floor * n_users, 0)
    weights = rng.lognormal(0.0, _ACTIVITY_SIGMA, size=n_users)
    extra = rng.multinomial(rest, weights / weights.sum())
    return (floor + extra).astype(np.int64)


def _capped_gaps(n: int, spec: tuple[float, float, float], rng: np.random.Generator) -> FloatArray:
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
    first_hour = (start_us // (3_600 * _US)) % 24
    hourly = np.asarray(_HOURLY_TRAFFIC)[(first_hour + np.arange(n_hours)) % 24]
    cum = np.cumsum(hourly) / hourly.sum()
    hour = np.minimum(np.searchsorted(cum, rng.random(len(bounds_s)), side="right"), n_hours - 1)
    fraction = (hour + rng.random(len(bounds_s))) / n_hours
    span_s = config.days * 86_400.0
    return fraction * np.maximum(span_s - bounds_s, 0.0)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class _Views:
    """Internal: one row per view, before funnel steps are added."""

    user: IntArray
    item: npt.NDArray[np.intp]
    t_s: FloatArray  # seconds after the log start
    favourite: npt.NDArray[np.bool_]  # item is in the user's favourite category


def _view_times(
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
    gaps = np.where(new_session, 0.0, _capped_gaps(n_views, _GAP_VIEW, rng))
    elapsed = np.cumsum(gaps)
    offset = elapsed - elapsed[np.flatnonzero(new_session)][session]
    n_sessions = int(session[-1]) + 1
    last_offset = np.zeros(n_sessions)
    np.maximum.at(last_offset, session, offset)
    starts = _session_starts(last_offset, config, start_us, rng)
    return user, starts[session] + offset


def _choose_items(
    user: IntArray,
    t_s: FloatArray,
    tastes: FloatArray,
    catalog_codes: IntArray,
    catalog: Catalog,
    config: ShopConfig,
    rng: np.random.Generator,
) -> npt.NDArray[np.intp]:
    """Item of each view: category by the user's taste, item by Zipf popularity in it.

    Unavailable items went out of stock at a random time; later views go to available items.
    """
    n_items, n_cat = len(catalog_codes), tastes.shape[1]
    taste_cum = _grouped_cumulative(tastes.ravel(), np.full(len(tastes), n_cat, dtype=np.int64))
    category = _sample_grouped(taste_cum, user, rng) - user * n_cat

    order = np.lexsort((rng.random(n_items), catalog_codes))  # grouped, random rank inside
    sizes = np.bincount(catalog_codes, minlength=n_cat).astype(np.int64)
    rank = np.arange(n_items) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    popularity = ((rank + 1.0) ** -config.zipf_exponent).astype(np.float64)
    item = order[_sample_grouped(_grouped_cumulative(popularity, sizes), category, rng)]

    available = np.asarray(catalog.available, dtype=bool)
    span_s = config.days * 86_400.0
    stock_out_s = np.where(available, np.inf, rng.uniform(0.3 * span_s, span_s, n_items))
    late = np.flatnonzero(t_s >= stock_out_s[item])
    has_stock = np.bincount(catalog_codes[available], minlength=n_cat) > 0
    late = late[has_stock[category[late]]]
    if len(late):
        in_stock_cum = _grouped_cumulative(np.where(available[order], popularity, 0.0), sizes)
        item[late] = order[_sample_grouped(in_stock_cum, category[late], rng)]
    return item


def _funnel(views: _Views, rng: np.random.Generator) -> list[tuple[IntArray, FloatArray]]:
    """Per step (view, click, cart, purchase, rating): source view index and time in seconds."""
    idx = np.arange(len(views.user), dtype=np.int64)
    t = views.t_s
    steps = [(idx, t)]
    p_click = _P_CLICK_BASE + _P_CLICK_FAV * views.favourite
    for step, gap in enumerate(_GAP_STEP):
        p = p_click if step == 0 else (_P_CART, _P_PURCHASE, _P_RATING)[step - 1]
        keep = rng.random(len(idx)) < p
        idx, t = idx[keep], t[keep] + _capped_gaps(int(keep.sum()), gap, rng)
        steps.append((idx, t))
    return steps


def _ratings(favourite: npt.NDArray[np.bool_], rng: np.random.Generator) -> FloatArray:
    """Star ratings 1..5 as floats, higher on the user's favourite category."""
    u = rng.random(len(favourite))
    fav = np.searchsorted(np.cumsum(_RATING_P_FAV), u, side="right")
    other = np.searchsorted(np.cumsum(_RATING_P_OTHER), u, side="right")
    return np.minimum(np.where(favourite, fav, other), 4).astype(np.float64) + 1.0


def _window_us(config: ShopConfig) -> tuple[int, int]:
    """Start and end of the log as microseconds since the Unix epoch (UTC)."""
    end = config.end.astimezone(UTC).replace(tzinfo=None)
    end_us = int(np.datetime64(end, "us").astype(np.int64))
    return end_us - config.days * 86_400 * _US, end_us


def generate_events(config: ShopConfig, catalog: Catalog) -> EventLog:
    """Generate the event log for `catalog`: sessions of views feeding a purchase funnel."""
    rng = _rng(config.seed, 1)
    start_us, end_us = _window_us(config)
    cat_labels, codes = np.unique(np.asarray(catalog.categories), return_inverse=True)
    codes = codes.astype(np.int64)
    tastes = _user_tastes(config.n_users, len(cat_labels), rng)

    step_rate = 1.0
    for p in (_P_RATING, _P_PURCHASE, _P_CART, _P_CLICK_BASE + 0.5 * _P_CLICK_FAV):
        step_rate = 1.0 + p * step_rate  # expected events per view
    n_views = max(round(config.n_events / step_rate), 1)
    user, t_s = _view_times(_views_per_user(config.n_users, n_views, rng), config, start_us, rng)
    item = _choose_items(user, t_s, tastes, codes, catalog, config, rng)
    favourite = codes[item] == np.argmax(tastes, axis=1)[user]
    steps = _funnel(_Views(user=user, item=item, t_s=t_s, favourite=favourite), rng)

    src = np.concatenate([idx for idx, _ in steps])
    times_us = start_us + np.concatenate([np.floor(t * _US) for _, t in steps]).astype(np.int64)
    kinds = np.repeat(np.arange(len(steps)), [len(idx) for idx, _ in steps])
    values = np.full(len(src), np.nan)
    rating_rows = kinds == _RATING
    values[rating_rows] = _ratings(favourite[src[rating_rows]], rng)

    # The log is a snapshot at `end`: funnel steps that would happen later are cut off.
    keep = np.flatnonzero((kinds == _VIEW) | (times_us < end_us))
    times_us = np.minimum(times_us, end_us - 1)  # views: guard against float rounding
    order = keep[np.argsort(times_us[keep], kind="stable")]  # ties keep funnel order
    src, kinds, values, times_us = src[order], kinds[order], values[order], times_us[order]
    return EventLog(
        event_ids=_ids(f"ev-s{config.seed}-", len(src), 7),
        user_ids=_ids("u-", config.n_users, 6)[user[src]],
        item_ids=np.asarray(catalog.item_ids)[item[src]],
        types=np.asarray(EVENT_TYPES)[kinds],
        values=values,
        occurred_at=times_us.astype("datetime64[us]"),
    )


# --------------------------------------------------------------------------- writers

_EVENT_FIELDS = ("event_id", "user_id", "item_id", "type", "value", "occurred_at")
_CHUNK_ROWS = 200_000


@contextmanager
def _open_text(path: Path) -> Iterator[IO[str]]:
    """Open `path` for UTF-8 text writing, gzip-compressed when the name ends with .gz."""
    path = Path(path)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8", newline="", compresslevel=6) as fh:
            yield fh
    else:
        with path.open("w", encoding="utf-8", newline="") as fh:
            yield fh


def _iso_utc(times: np.ndarray) -> list[str]:
    """ISO-8601 strings with microseconds and an explicit +00:00 offset."""
    text = np.datetime_as_string(np.asarray(times, dtype="datetime64[us]"), unit="us")
    return [s + "+00:00" for s in text.tolist()]


def _value_text(values: np.ndarray) -> list[str]:
    """Values as shortest round-trip decimal strings (also valid JSON); empty where NaN."""
    values = np.asarray(values, dtype=np.float64)
    if np.isinf(values).any():
        raise ValueError("event values must be finite or NaN")
    out = np.full(len(values), "", dtype=object)
    present = ~np.isnan(values)
    out[present] = values[present].astype(str)
    return out.tolist()


def _event_chunks(log: EventLog) -> Iterator[tuple[list[str], ...]]:
    """The log's columns as lists of str, a block of rows at a time (bounds memory)."""
    for lo in range(0, len(log), _CHUNK_ROWS):
        part = slice(lo, lo + _CHUNK_ROWS)
        yield (
            np.asarray(log.event_ids[part]).astype(str).tolist(),
            np.asarray(log.user_ids[part]).astype(str).tolist(),
            np.asarray(log.item_ids[part]).astype(str).tolist(),
            np.asarray(log.types[part]).astype(str).tolist(),
            _value_text(log.values[part]),
            _iso_utc(log.occurred_at[part]),
        )


def write_events_csv(path: Path, log: EventLog) -> int:
    """Write the log as CSV (gzip if the name ends with .gz); returns rows written."""
    with _open_text(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(_EVENT_FIELDS)
        for columns in _event_chunks(log):
            writer.writerows(zip(*columns, strict=True))
    return len(log)


def write_events_jsonl(path: Path, log: EventLog) -> int:
    """Write the log as JSON lines (gzip if .gz); "value" is omitted where NaN."""
    q = encode_basestring  # JSON string literal with escapes; C-accelerated
    with _open_text(path) as fh:
        for ev, user, item, kind, value, when in _event_chunks(log):
            fh.write(
                "".join(
                    f'{{"event_id": {q(e)}, "user_id": {q(u)}, "item_id": {q(i)}, "type": {q(k)}'
                    + (f', "value": {v}' if v else "")
                    + f', "occurred_at": {q(w)}}}\n'
                    for e, u, i, k, v, w in zip(ev, user, item, kind, value, when, strict=True)
                )
            )
    return len(log)


def write_catalog_csv(path: Path, catalog: Catalog) -> int:
    """Write the catalogue as CSV (item_id,category,available as true/false); returns rows."""
    flags = np.where(np.asarray(catalog.available, dtype=bool), "true", "false").tolist()
    ids = np.asarray(catalog.item_ids).astype(str).tolist()
    cats = np.asarray(catalog.categories).astype(str).tolist()
    with _open_text(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("item_id", "category", "available"))
        writer.writerows(zip(ids, cats, flags, strict=True))
    return len(ids)


def as_events(log: EventLog) -> list[Event]:
    """The log as validated `Event` tuples, ready for `EventWriter.write` (tests, benchmarks)."""
    times = log.occurred_at.astype("datetime64[us]").astype(datetime)
    return [
        Event(
            str(e),
            str(u),
            str(i),
            str(t),
            None if np.isnan(v) else float(v),
            moment.replace(tzinfo=UTC),
        )
        for e, u, i, t, v, moment in zip(
            log.event_ids, log.user_ids, log.item_ids, log.types, log.values, times, strict=True
        )
    ]


def write_demo_files(out_dir: Path, config: ShopConfig) -> dict[str, Path]:
    """Generate a shop and write out_dir/events.csv.gz and out_dir/items.csv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog = generate_catalog(config)
    paths = {"events": out_dir / "events.csv.gz", "items": out_dir / "items.csv"}
    write_events_csv(paths["events"], generate_events(config, catalog))
    write_catalog_csv(paths["items"], catalog)
    return paths
