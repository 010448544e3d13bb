"""The synthetic shop as files and as `Event`s: what the demo, the importer and tests read.

CSV and JSON lines of the log (gzip when the name ends with .gz), the catalogue CSV, and the
log as validated `Event` tuples. Rows are written a block at a time, so a million-event log
never exists as a million Python strings at once.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO

import numpy as np

from shared.events import Event
from shared.synthetic.catalog import generate_catalog
from shared.synthetic.config import Catalog, EventLog, ShopConfig
from shared.synthetic.events import generate_events

__all__ = [
    "as_events",
    "write_catalog_csv",
    "write_demo_files",
    "write_events_csv",
    "write_events_jsonl",
]

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
