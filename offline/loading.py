"""The only I/O of the offline math: stream the events of a time window out of PostgreSQL.

Why not `COPY ... TO STDOUT`: PostgreSQL sends one protocol message per row, and reading
a million of them through psycopg costs 1.4-3 s before any parsing (measured: COPY CSV +
pyarrow.csv loads ~0.5 M events/s on 2 cores; this module ~1.2 M events/s). Instead each
query aggregates a slice of the table into a handful of values sent in binary: ids as one
concatenated string plus an array of byte lengths, the rest as fixed-width arrays. numpy
and pyarrow then decode them without a Python object per event. The heap is sliced by
block ranges (`ctid`, a TID range scan in each partition) and the slices are read over a
few connections that share one exported snapshot, so the server uses more than one core
and every slice sees the same events.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.conninfo import make_conninfo

from shared.confidence import EVENT_TYPES, EventColumns

__all__ = ["load_events", "newest_event_time", "window_start"]

_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 (PostgreSQL's timestamp zero) in Unix µs
_HEAP_BLOCKS_PER_QUERY = 32_768  # 256 MiB of heap over all partitions: ids stay far below 1 GB
_SELECT = sql.SQL(
    "SELECT string_agg(user_id, ''), array_agg(octet_length(user_id)),"
    " string_agg(item_id, ''), array_agg(octet_length(item_id)),"
    " array_agg(array_position({types}::event_type[], type)::int2),"
    " array_agg(coalesce(value, 'NaN')), array_agg(occurred_at)"
    " FROM events WHERE {where}"
)
_PARTITION_BLOCKS = (
    "SELECT count(*), coalesce(max(pg_relation_size(inhrelid)), 0)"
    " / current_setting('block_size')::int FROM pg_inherits"
    " WHERE inhparent = 'events'::regclass"
)

Chunk = tuple[int, int | None]  # heap block range [start, stop); None: to the end


class _RawBytes(Loader):
    """Binary values as bytes, decoded by numpy/pyarrow instead of one Python object each."""

    format = psycopg.pq.Format.BINARY

    def load(self, data: Buffer) -> bytes:
        """The value's binary wire bytes, copied out of the result."""
        return bytes(data)


def load_events(
    conn: psycopg.Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    workers: int = 2,
) -> EventColumns:
    """Committed events with since <= occurred_at < until (None: unbounded), as columns.

    Reads over `workers` new connections with the parameters of `conn` (whose own session
    and transaction are left alone), all under one snapshot. Event order is unspecified.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    conninfo = _conninfo(conn)
    with _reader(conninfo) as lead:
        snapshot = _scalar(lead, "SELECT pg_export_snapshot()") if workers > 1 else ""
        chunks = _plan_chunks(lead, workers)
        lanes = [chunks[lane::workers] for lane in range(workers)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            first = pool.submit(_read_lane, lead, lanes[0], since, until)
            others = [
                pool.submit(_read_imported, conninfo, snapshot, lane, since, until)
                for lane in lanes[1:]
            ]
            slices = [s for future in [first, *others] for s in future.result()]
    return _combine(slices)


def newest_event_time(conn: psycopg.Connection) -> datetime | None:
    """The latest occurred_at of all events, or None when there are none."""
    row = conn.execute("SELECT max(occurred_at) FROM events").fetchone()
    return None if row is None else row[0]


def window_start(newest: datetime, days: int | None) -> datetime | None:
    """Start of a training window of `days` ending at `newest`; None means all events."""
    if days is None:
        return None
    if days <= 0:
        raise ValueError("days must be > 0 (or None for all events)")
    return newest - timedelta(days=days)


def _require_utf8(conn: psycopg.Connection) -> None:
    """Byte lengths are counted by the server: they match what we receive only in UTF-8."""
    for name in ("server_encoding", "client_encoding"):
        if conn.info.parameter_status(name) != "UTF8":
            raise ValueError(f"load_events needs {name} UTF8")


def _scalar(conn: psycopg.Connection, query: str) -> Any:
    """The single value of a query that always returns one row."""
    row = conn.execute(query).fetchone()
    assert row is not None  # an aggregate / function call always returns a row
    return row[0]


def _plan_chunks(conn: psycopg.Connection, workers: int) -> list[Chunk]:
    """Heap block ranges, each scanned in every partition: at least one per worker."""
    row = conn.execute(_PARTITION_BLOCKS).fetchone()
    partitions, blocks = (int(row[0]), int(row[1])) if row else (0, 0)
    per_query = max(1, _HEAP_BLOCKS_PER_QUERY // max(partitions, 1))
    size = max(1, min(per_query, math.ceil(blocks / workers)))
    starts = list(range(0, max(blocks, 1), size))
    return [(start, start + size) for start in starts[:-1]] + [(starts[-1], None)]


def _conninfo(conn: psycopg.Connection) -> str:
    """The caller's connection parameters (password included) for the helper connections."""
    options = {o.keyword.decode(): o.val.decode() for o in conn.pgconn.info if o.val}
    return make_conninfo(**options)


def _reader(conninfo: str) -> psycopg.Connection:
    """A new read-only REPEATABLE READ connection: every query sees one snapshot."""
    reader = psycopg.connect(conninfo)
    try:
        _require_utf8(reader)
    except ValueError:
        reader.close()
        raise
    reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    reader.read_only = True
    return reader


def _read_imported(
    conninfo: str,
    snapshot: str,
    chunks: list[Chunk],
    since: datetime | None,
    until: datetime | None,
) -> list[_Slice]:
    """Read chunks over a new connection that imports the lead reader's snapshot."""
    if not chunks:
        return []
    with _reader(conninfo) as reader:
        reader.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        return _read_lane(reader, chunks, since, until)


def _read_lane(
    reader: psycopg.Connection,
    chunks: list[Chunk],
    since: datetime | None,
    until: datetime | None,
) -> list[_Slice]:
    """Read and decode chunks one after another over one connection."""
    with reader.cursor(binary=True) as cur:
        for oid in _raw_oids(reader):
            cur.adapters.register_loader(oid, _RawBytes)
        rows = (_read_chunk(cur, chunk, since, until) for chunk in chunks)
        return [_decode_chunk(row) for row in rows if row is not None]


def _raw_oids(conn: psycopg.Connection) -> list[int]:
    """OIDs of the result types that `_RawBytes` hands over undecoded."""
    types = conn.adapters.types
    arrays = [types[name].array_oid for name in ("int4", "int2", "float8", "timestamptz")]
    return [types["text"].oid, *arrays]


def _read_chunk(
    cur: psycopg.Cursor[Any], chunk: Chunk, since: datetime | None, until: datetime | None
) -> tuple[bytes, ...] | None:
    """One aggregated row of raw binary values for a block range; None when it is empty."""
    start, stop = chunk
    conditions: list[tuple[sql.SQL, object]] = [(sql.SQL("ctid >= {}::tid"), f"({start},0)")]
    if stop is not None:
        conditions.append((sql.SQL("ctid < {}::tid"), f"({stop},0)"))
    if since is not None:
        conditions.append((sql.SQL("occurred_at >= {}"), since))
    if until is not None:
        conditions.append((sql.SQL("occurred_at < {}"), until))
    where = sql.SQL(" AND ").join(c.format(sql.Placeholder()) for c, _ in conditions)
    types = sql.Literal("{" + ",".join(EVENT_TYPES) + "}")
    cur.execute(_SELECT.format(types=types, where=where), [p for _, p in conditions])
    row = cur.fetchone()
    return None if row is None or row[0] is None else tuple(row)


@dataclass(frozen=True)
class _Slice:
    """The decoded events of one chunk; ids dictionary-encoded within the chunk only."""

    users: pa.DictionaryArray
    items: pa.DictionaryArray
    type_code: np.ndarray
    value: np.ndarray
    occurred_at: np.ndarray


def _decode_chunk(row: tuple[bytes, ...]) -> _Slice:
    """Raw aggregated values -> arrays (runs in the lane's thread, beside the other queries)."""
    seconds = _array(row[6], ">i8").astype(np.float64)  # µs < 2**53: exact in float64
    seconds += _PG_EPOCH_US
    seconds /= 1e6
    return _Slice(
        users=_encode_ids(row[0], _array(row[1], ">i4")),
        items=_encode_ids(row[2], _array(row[3], ">i4")),
        type_code=(_array(row[4], ">i2") - 1).astype(np.int8),  # array_position is 1-based
        value=_array(row[5], ">f8").astype(np.float64),
        occurred_at=seconds,
    )


def _encode_ids(data: bytes, sizes: np.ndarray) -> pa.DictionaryArray:
    """Concatenated UTF-8 ids and their byte lengths -> a dictionary-encoded arrow array."""
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    strings = pa.LargeStringArray.from_buffers(
        len(sizes), pa.py_buffer(offsets), pa.py_buffer(data)
    )
    return pc.dictionary_encode(strings)


def _combine(slices: list[_Slice]) -> EventColumns:
    """Concatenate the slices under one user and one item dictionary."""
    users, user_ids = _unify([s.users for s in slices])
    items, item_ids = _unify([s.items for s in slices])
    return EventColumns(
        user_index=users,
        item_index=items,
        user_ids=user_ids,
        item_ids=item_ids,
        type_code=_concat([s.type_code for s in slices], np.int8),
        value=_concat([s.value for s in slices], np.float64),
        occurred_at=_concat([s.occurred_at for s in slices], np.float64),
    )


def _unify(parts: list[pa.DictionaryArray]) -> tuple[np.ndarray, np.ndarray]:
    """(int32 codes, distinct ids as an object array) over all parts."""
    if not parts:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=object)
    chunks = pa.chunked_array(parts).unify_dictionaries().chunks if len(parts) > 1 else parts
    codes = [chunk.indices.to_numpy(zero_copy_only=False) for chunk in chunks]
    ids = chunks[0].dictionary.to_numpy(zero_copy_only=False).astype(object)
    return np.concatenate(codes).astype(np.int32), ids


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    """One array of the parts (no copy for a single part)."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)


def _array(raw: bytes, dtype: str) -> np.ndarray:
    """Elements of a one-dimensional binary PostgreSQL array of a fixed-width, non-null type."""
    header = np.frombuffer(raw, dtype=">i4", count=3)
    ndim, has_null = int(header[0]), int(header[1])
    if has_null:
        raise ValueError("unexpected NULL in an aggregated event column")
    if ndim == 0:
        return np.empty(0, dtype=dtype)
    count = int(np.frombuffer(raw, dtype=">i4", count=1, offset=12)[0])
    element = np.dtype([("length", ">i4"), ("value", dtype)])
    records = np.frombuffer(raw, dtype=element, count=count, offset=12 + 8 * ndim)
    return records["value"]
