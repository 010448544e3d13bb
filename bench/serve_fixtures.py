"""Pieces of bench/serve.py: synthetic models, their registry rows, and the two load sources
that are not wrk (the fixed-rate client and the in-process scorer), each run in its own process.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import queue
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httptools
import numpy as np
import psycopg
import scipy.sparse as sp
import uvloop

from shared import registry
from shared.artifacts import directory_size, write_version
from shared.confidence import ConfidenceSettings
from shared.keys import create_key
from shared.model_spec import ModelParams

SEEN_PER_USER = 10
WINDOW_END = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ModelSpec:
    """A synthetic ALS model: random float32 factors, ids, a small seen CSR, popularity."""

    items: int
    users: int = 50_000
    factors: int = 64
    seed: int = 0

    @property
    def version(self) -> str:
        return f"bench-{self.items // 1000}k-x{self.factors}"


def user_ids(count: int) -> np.ndarray:
    """Sorted fixed-width ids, as build_matrix writes them."""
    return np.array([f"u{i:08d}" for i in range(count)])


def write_model(root: Path, spec: ModelSpec) -> Path:
    """Write the model as a published version directory and return its path."""
    rng = np.random.default_rng(spec.seed)
    scale = np.float32(1 / np.sqrt(spec.factors))
    rows = np.repeat(np.arange(spec.users), SEEN_PER_USER)
    cols = rng.integers(0, spec.items, size=len(rows))
    seen = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(spec.users, spec.items)
    )
    arrays: dict[str, Any] = {
        "user_factors": rng.standard_normal((spec.users, spec.factors), np.float32) * scale,
        "item_factors": rng.standard_normal((spec.items, spec.factors), np.float32) * scale,
        "user_ids": user_ids(spec.users),
        "item_ids": np.array([f"i{i:07d}" for i in range(spec.items)]),
        "seen": seen,
        "item_popularity": np.asarray(seen.sum(axis=0), dtype=np.float32).ravel(),
    }
    params = ModelParams(algorithm="als", factors=spec.factors)
    fields = {
        "algorithm": "als",
        "params": params.to_dict(),
        "data": {
            "window_end": WINDOW_END.isoformat(),
            "confidence": ConfidenceSettings().to_dict(),
        },
    }
    return write_version(root, spec.version, arrays, manifest_fields=fields)


def publish(database_url: str, path: Path, *, algorithm: str = "als") -> None:
    """Insert a finished run and the version row, and move the pointer to it."""
    with psycopg.connect(database_url) as conn:
        run_id = registry.create_run(conn, trigger="bench", forced=True, settings={})
        registry.finish_run(conn, run_id, status="promoted", model_version=None)
        registry.publish_version(
            conn,
            registry.ModelVersion(
                version=path.name,
                run_id=run_id,
                created_at=datetime.now(UTC),
                status="promoted",
                reason="bench/serve",
                algorithm=algorithm,
                params={},
                metrics={},
                data={},
                artifact_path=str(path),
                artifact_bytes=directory_size(path),
                events_until=WINDOW_END,
                received_until=WINDOW_END,
                files_deleted_at=None,
            ),
            promote=True,
            moved_by="bench",
        )


def recommend_key(database_url: str) -> str:
    """A new API key with the recommend scope (plaintext)."""
    with psycopg.connect(database_url) as conn:
        return create_key(conn, name=f"bench-serve-{uuid.uuid4().hex[:8]}", scopes="recommend").key


# -- in-process scoring ----------------------------------------------------------------------


def _score_for(path: str, users: int, seconds: float, start: Any, out: Any) -> None:
    """One process: recommend() for random known users for `seconds`.

    Puts "ready" once the model is loaded and warm, waits for `start`, then puts
    (calls per second, CPU seconds per call).
    """
    from threadpoolctl import threadpool_limits

    from shared.ranking.recommender import Recommender

    threadpool_limits(1)  # as in the API's workers (`recsys serve` gives BLAS one thread)
    model = Recommender.load(Path(path), verify=False)
    ids = user_ids(users)
    rng = np.random.default_rng()
    for user in ids[rng.integers(0, users, 200)]:  # warm the pages and the code paths
        model.recommend(str(user), n=10)
    picks = [str(user) for user in ids[rng.integers(0, users, 1 << 16)]]
    out.put("ready")
    start.wait()
    calls = 0
    cpu = time.process_time()
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        model.recommend(picks[calls & 0xFFFF], n=10)
        calls += 1
    out.put((calls / (time.perf_counter() - began), (time.process_time() - cpu) / max(calls, 1)))


def in_process_rate(
    path: Path, *, users: int, processes: int, seconds: float
) -> tuple[float, float]:
    """recommend() calls per second of `processes` spawned processes scoring at once (summed)
    and their mean CPU milliseconds per call."""
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    workers = [
        context.Process(target=_score_for, args=(str(path), users, seconds, start, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:  # every process loaded and warm before the clock starts
        if _result_of(workers, out, timeout=120) != "ready":
            raise RuntimeError("a scoring process answered before it was started")
    start.set()
    answers = [_result_of(workers, out, timeout=seconds + 60) for _ in workers]
    for worker in workers:
        worker.join()
    rate = sum(calls for calls, _ in answers)
    return rate, 1000 * statistics.mean(cpu for _, cpu in answers)


def _result_of(workers: Sequence[Any], out: Any, *, timeout: float) -> Any:
    """The next value spawned processes put on `out`; RuntimeError if one died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return out.get(timeout=0.5)
        except queue.Empty:
            dead = [w for w in workers if not w.is_alive() and w.exitcode != 0]
            if dead:
                raise RuntimeError(f"{dead[0].name} ended with code {dead[0].exitcode}") from None
    raise RuntimeError(f"no result from {len(workers)} process(es) within {timeout:.0f} s")


# -- fixed-rate HTTP client ------------------------------------------------------------------


@dataclass
class PacedResult:
    """Latencies (seconds) of a fixed-rate run: from the send, and from the scheduled time."""

    sent: list[float] = field(default_factory=list)
    scheduled: list[float] = field(default_factory=list)
    errors: int = 0
    achieved_rate: float = 0.0


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection answering one request at a time (httptools)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.WriteTransport | None = None
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("connection closed"))

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


async def _paced(
    port: int, requests: Sequence[bytes], rate: float, seconds: float, connections: int
) -> PacedResult:
    """Send request k at start + k/rate on whichever connection is free (wrk2-like)."""
    loop = asyncio.get_running_loop()
    conns = [
        (await loop.create_connection(_Connection, "127.0.0.1", port))[1]
        for _ in range(connections)
    ]
    total = int(rate * seconds)
    slots = itertools.count()
    result = PacedResult()
    start = time.perf_counter() + 0.2

    async def drive(conn: _Connection) -> None:
        for slot in slots:
            if slot >= total:
                return
            due = start + slot / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            sent = time.perf_counter()
            status = await conn.request(requests[slot % len(requests)])
            done = time.perf_counter()
            if status != 200:
                result.errors += 1
            result.sent.append(done - sent)
            result.scheduled.append(done - due)

    await asyncio.gather(*(drive(conn) for conn in conns))
    result.achieved_rate = total / (time.perf_counter() - start)
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    return result


def _paced_process(
    port: int, requests: list[bytes], rate: float, seconds: float, connections: int, out: Any
) -> None:
    out.put(uvloop.run(_paced(port, requests, rate, seconds, connections)))


def paced_latencies(
    port: int, requests: list[bytes], *, rate: float, seconds: float, connections: int = 32
) -> PacedResult:
    """Run the fixed-rate client in its own (spawned) process and return what it measured."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    args = (port, requests, rate, seconds, connections, out)
    worker = context.Process(target=_paced_process, args=args)
    worker.start()
    result: PacedResult = _result_of([worker], out, timeout=seconds + 120)
    worker.join()
    return result


def http_get(path: str, *, host: str, headers: dict[str, str]) -> bytes:
    """The raw bytes of a keep-alive GET (what wrk sends, give or take header order)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
