"""Ingestion benchmark: events/s through `recsys serve --workers 2` against raw COPY.

Posts N synthetic events in batches of 1,000 (validation and duplicate handling included)
and, in the same run, COPYs the same rows straight into the same table from as many
connections as the API has workers. Each side runs R rounds on emptied tables; medians
are printed.

    python -m bench.ingest [--events 200000] [--rounds 3] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import orjson
import psycopg

from bench.common import bench_key, bench_server_env, median, percentile, scratch_database
from shared.event_store import EventWriter
from shared.events import Event
from shared.synthetic import ShopConfig, as_events, generate_catalog, generate_events
from tests.servers import running_api

COPY_SQL = (
    "COPY events (event_id, user_id, item_id, type, value, occurred_at) FROM STDIN (FORMAT BINARY)"
)
COPY_TYPES = ["text", "text", "text", "text", "float8", "timestamptz"]


def synthetic_events(count: int) -> list[Event]:
    config = ShopConfig(
        n_users=20_000,
        n_items=10_000,
        n_events=count,
        seed=7,
        end=datetime.now(UTC).replace(microsecond=0),
    )
    return as_events(generate_events(config, generate_catalog(config)))[:count]


def json_batches(events: list[Event], size: int) -> list[bytes]:
    def as_dict(e: Event) -> dict[str, object]:
        body: dict[str, object] = {
            "event_id": e.event_id,
            "user_id": e.user_id,
            "item_id": e.item_id,
            "type": e.type,
            "occurred_at": e.occurred_at.isoformat(),
        }
        if e.value is not None:
            body["value"] = e.value
        return body

    return [
        orjson.dumps([as_dict(e) for e in events[n : n + size]])
        for n in range(0, len(events), size)
    ]


def empty_tables(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE events, event_ids")


def http_round(
    base: str, batches: list[bytes], concurrency: int, key: str
) -> tuple[float, list[float]]:
    """Post every batch with `concurrency` keep-alive clients; wall seconds and batch latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    local = threading.local()

    def post(body: bytes) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=30)
        started = time.perf_counter()
        response = local.client.post(
            "/v1/events",
            content=body,
            headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
        )
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, batches))
    return time.perf_counter() - started, latencies


def copy_round(url: str, events: list[Event], connections: int, batch: int | None) -> float:
    """COPY the same rows from `connections` parallel connections.

    batch=None: one COPY (one transaction) per connection, the ceiling of the database;
    otherwise one COPY and one commit per `batch` rows, the API's unit of work.
    """
    share = (len(events) + connections - 1) // connections
    parts = [events[n : n + share] for n in range(0, len(events), share)]
    with psycopg.connect(url) as warm:  # partitions exist before the clock starts
        EventWriter().ensure_partitions(warm, (e.occurred_at for e in events))

    def copy(part: list[Event]) -> None:
        step = batch or len(part)
        with psycopg.connect(url) as conn:
            for start in range(0, len(part), step):
                with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_SQL) as out:
                    out.set_types(COPY_TYPES)
                    for event in part[start : start + step]:
                        out.write_row(event)

    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(copy, parts))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    events = synthetic_events(args.events)
    batches = json_batches(events, args.batch)
    print(
        f"{len(events):,} events in {len(batches)} batches of {args.batch:,}; "
        f"{args.workers} API workers, {args.concurrency} concurrent clients"
    )
    http_rates, copy_rates, batched_rates, p99s, p50s = [], [], [], [], []
    with (
        scratch_database("recsys_bench_ingest") as url,
        running_api(url, workers=args.workers, extra_env=bench_server_env()) as base,
    ):
        key = bench_key(url, "events")
        for round_number in range(1, args.rounds + 1):
            empty_tables(url)
            wall, latencies = http_round(base, batches, args.concurrency, key)
            http_rates.append(len(events) / wall)
            p50s.append(percentile(latencies, 50) * 1000)
            p99s.append(percentile(latencies, 99) * 1000)
            empty_tables(url)
            copy_rates.append(len(events) / copy_round(url, events, args.workers, None))
            empty_tables(url)
            batched = copy_round(url, events, args.workers, args.batch)
            batched_rates.append(len(events) / batched)
            print(
                f"round {round_number}: http {http_rates[-1]:,.0f} ev/s "
                f"(batch p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms), "
                f"raw COPY {copy_rates[-1]:,.0f} ev/s, "
                f"raw COPY per {args.batch:,} {batched_rates[-1]:,.0f} ev/s"
            )
    http, raw, raw_batched = median(http_rates), median(copy_rates), median(batched_rates)
    print(f"median HTTP ingestion             : {http:,.0f} events/s")
    print(f"median raw COPY, one per connection: {raw:,.0f} events/s")
    print(f"median raw COPY, {args.batch:,} rows per commit: {raw_batched:,.0f} events/s")
    print(f"ratio HTTP / raw COPY             : {http / raw:.2f}")
    print(f"ratio HTTP / raw COPY per batch   : {http / raw_batched:.2f}")
    print(f"batch of {args.batch:,}: p50 {median(p50s):.1f} ms, p99 {median(p99s):.1f} ms")


if __name__ == "__main__":
    main()
