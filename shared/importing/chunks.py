"""The chunked write loop both imports share: bounded chunks, each written while the next is
prepared, one transaction each, and the summary's closing figures.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from itertools import islice
from typing import Protocol, TypeVar

import psycopg
from psycopg.pq import TransactionStatus

from shared.importing.readers import (
    ImportConfigError,
    RejectsFile,
)

DEFAULT_CHUNK_SIZE = 50_000
Progress = Callable[[int], None]  # called after each chunk with the bytes of the file read
T = TypeVar("T")
C = TypeVar("C")
R = TypeVar("R")


def write_overlapped(
    chunks: Iterator[C], write: Callable[[C], R], written: Callable[[R], None]
) -> None:
    """Write each chunk on a helper thread while the next one is read and validated.

    The database's share of a chunk (claiming ids, COPY, commit) is mostly waiting, with the
    GIL released, so it overlaps the parsing. At most one chunk is being written while the
    next is prepared, so memory stays bounded. On an error or Ctrl-C the write under way is
    finished (committed or rolled back) before this returns.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-writer") as pool:
        pending: Future[R] | None = None
        for chunk in chunks:
            if pending is not None:
                written(pending.result())
            pending = pool.submit(write, chunk)
        if pending is not None:
            written(pending.result())


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while importing.

    A chunk allocates millions of short-lived, acyclic objects while the chunk itself stays
    alive, and the default (a collection every 700 allocations) costs about 15% of the time.
    """
    before = gc.get_threshold()
    gc.set_threshold(50_000, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(items, size)):
        yield chunk


def check_call(conn: psycopg.Connection, chunk_size: int) -> None:
    """Refuse what cannot work before touching the file or the database.

    Each chunk must commit on its own, so the caller must not hold a transaction open.
    """
    if chunk_size < 1:
        raise ImportConfigError("--chunk-size must be at least 1")
    if not conn.autocommit and conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("import needs a connection with no transaction open")


class Summary(Protocol):
    """The closing figures every import summary carries."""

    rejected: int
    rejects_file: str | None
    first_errors: list[tuple[int, str]]
    seconds: float


def finish_summary(summary: Summary, rejects: RejectsFile, started: float) -> None:
    """Fill the summary's rejects and elapsed seconds once the file is done."""
    summary.rejected = rejects.count
    summary.rejects_file = str(rejects.path) if rejects.count else None
    summary.first_errors = rejects.sample
    summary.seconds = round(time.perf_counter() - started, 3)
