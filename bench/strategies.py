"""Serving strategies benchmark: each strategy under load, next to the bare endpoint.

    python -m bench.strategies [--seconds 20] [--workers 2] [--connections 64]
        [--items 100000] [--users 50000] [--strategies exact,precomputed,batched,ann,float16]

Needs PostgreSQL (RECSYS_BENCH_POSTGRES_URL, default postgres@127.0.0.1:5432) and Redis
(RECSYS_REDIS_URL, default 127.0.0.1:6379); uses wrk when it is on PATH, else a closed-loop
Python client (uvloop + httptools, in its own process) with the same connection count.

Setup, not measured: bench/serve_fixtures' synthetic ALS model (`--items` x 64 factors,
`--users` users, 10 seen items each) is written once, then once more per strategy with the
arrays offline.serving_build makes for it and the strategy in the manifest, as a retrain
would export it (the precomputed lists cover every user). For each strategy, `recsys serve
--workers N` is started on that version alone, warmed up for 2 s, then loaded at full speed
for `--seconds` on the bare fixed-answer route (our full stack, no work) and on
GET /v1/users/{random known user}/recommendations?n=10, in that order, so each strategy's
ratio to the bare route comes from the same server in the same minute. Also reported: the
servers' CPU per request, worker RSS, and the ANN index's recall@10 against exact scoring
(1,000 sampled users, nothing filtered), measured in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import percentile, scratch_database
from bench.serve import (
    Load,
    Server,
    clear_redis,
    running,
    server_env,
    serving,
    wait_until,
    wrk,
    wrk_script,
)
from bench.serve_fixtures import (
    ModelSpec,
    _Connection,
    _result_of,
    http_get,
    publish,
    recommend_key,
    user_ids,
    write_model,
)
from offline.serving_build import serving_arrays
from online.routes.bare import FIXED_PATH
from shared.artifacts import read_version, write_version
from shared.ranking.recommender import Recommender
from shared.serving_strategy import STRATEGIES, ServingStrategy

MIB = 1024**2


@dataclass(frozen=True)
class Options:
    seconds: float
    workers: int
    connections: int
    items: int
    users: int
    strategies: tuple[str, ...]
    client: str  # "wrk" | "python"
    directory: Path  # scratch: versions, wrk scripts, the servers' log


@dataclass(frozen=True)
class Row:
    """One strategy's results."""

    strategy: str
    rec: Load
    bare: Load
    rss_mib: list[float]
    recall: float | None


# -- versions ------------------------------------------------------------------------------


def strategy_version(base: Path, strategy: ServingStrategy) -> Path:
    """The base version rewritten with the strategy's arrays and manifest entry."""
    loaded = read_version(base, mmap=True, verify=False)
    arrays: dict[str, Any] = {
        name: array for name, array in loaded.arrays.items() if not name.startswith("seen_")
    }
    arrays["seen"] = loaded.csr("seen")
    began = time.perf_counter()
    arrays |= serving_arrays(
        strategy,
        user_factors=arrays["user_factors"],
        item_factors=arrays["item_factors"],
        seen=arrays["seen"],
        user_activity=None,
    )
    manifest = loaded.manifest
    fields = {
        "algorithm": manifest.algorithm,
        "params": manifest.params,
        "data": manifest.data,
        "serving": strategy.to_dict(),
    }
    path = write_version(
        base.parent, f"{base.name}-{strategy.name}", arrays, manifest_fields=fields
    )
    print(f"  {strategy.name}: built in {time.perf_counter() - began:.1f} s", flush=True)
    return path


# -- load ----------------------------------------------------------------------------------


async def _closed_loop(
    port: int, requests: Sequence[bytes], seconds: float, connections: int
) -> tuple[int, float, list[float], int]:
    """Each connection sends its next request as soon as the last is answered."""
    loop = asyncio.get_running_loop()
    conns = [
        (await loop.create_connection(_Connection, "127.0.0.1", port))[1]
        for _ in range(connections)
    ]
    latencies: list[float] = []
    errors = 0
    began = time.perf_counter()
    stop = began + seconds

    async def drive(conn: _Connection, k: int) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            sent = time.perf_counter()
            status = await conn.request(requests[k % len(requests)])
            latencies.append(time.perf_counter() - sent)
            errors += status != 200
            k += connections

    await asyncio.gather(*(drive(conn, k) for k, conn in enumerate(conns)))
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    return len(latencies), time.perf_counter() - began, latencies, errors


def _closed_loop_process(
    port: int, requests: list[bytes], seconds: float, connections: int, out: Any
) -> None:
    import uvloop

    out.put(uvloop.run(_closed_loop(port, requests, seconds, connections)))


def python_load(server: Server, requests: list[bytes], *, seconds: float, connections: int) -> Load:
    """Full speed with the Python client in a spawned process (so it has its own core)."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    args = (server.port, requests, seconds, connections, out)
    worker = context.Process(target=_closed_loop_process, args=args)
    cpu = server.cpu_seconds()
    worker.start()
    count, duration, latencies, errors = _result_of([worker], out, timeout=seconds + 120)
    worker.join()
    cpu = server.cpu_seconds() - cpu
    return Load(
        rate=count / duration,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        errors=errors,
        cpu_ms=cpu / max(count, 1) * 1000,
    )


def full_speed(
    server: Server, paths: list[str], key: str, options: Options, *, seconds: float, name: str
) -> Load:
    """wrk or the Python client at full speed over `paths` (picked at random per request)."""
    if options.client == "wrk":
        script = wrk_script(options.directory, name, paths, key)
        return wrk(server, script, seconds=seconds, connections=options.connections)
    headers = {"Authorization": f"Bearer {key}"}
    raw = [http_get(p, host=f"127.0.0.1:{server.port}", headers=headers) for p in paths]
    return python_load(server, raw, seconds=seconds, connections=options.connections)


# -- the run ---------------------------------------------------------------------------------


def rec_paths(users: np.ndarray, count: int = 20_000) -> list[str]:
    rng = np.random.default_rng(1)
    picks = users[rng.integers(0, len(users), count)]
    return [f"/v1/users/{user}/recommendations?n=10" for user in picks]


def measure(
    name: str, path: Path, *, env: dict[str, str], key: str, database_url: str, options: Options
) -> Row:
    """Serve the version alone; warm up; the bare route, then recommendations, at full speed."""
    publish(database_url, path)
    recsys = str(Path(sys.executable).with_name("recsys"))
    command = [recsys, "serve", "--workers", str(options.workers)]
    paths = rec_paths(user_ids(options.users))
    log = options.directory / "servers.log"
    with running(command, env, log) as server:
        wait_until(lambda: serving(server, path.name, options.workers), f"serving {path.name}")
        warm = full_speed(server, paths[:2000], key, options, seconds=2, name=f"{name}-warm")
        if warm.errors:
            raise RuntimeError(f"{warm.errors} failed requests warming up {name}; see {log}")
        bare = full_speed(server, [FIXED_PATH], key, options, seconds=options.seconds, name="bare")
        rec = full_speed(server, paths, key, options, seconds=options.seconds, name=name)
        rss = [r / MIB for r in server.worker_rss()]
    recall = None
    if name == "ann":
        recall = Recommender.load(path, verify=False).ann_recall(k=10, sample=1000)
    row = Row(name, rec, bare, rss, recall)
    print(f"  {name:<12} rec {rec.rate:8,.0f}/s p50 {rec.p50_ms:6.2f} p99 {rec.p99_ms:7.2f} ms"
          f" | bare {bare.rate:8,.0f}/s | ratio {rec.rate / bare.rate:.3f}"
          f" | errors {rec.errors + bare.errors}", flush=True)  # fmt: skip
    return row


def report(rows: list[Row], options: Options) -> str:
    head = (
        f"{options.items:,} items x 64 factors, {options.users:,} users; {options.workers} "
        f"API processes; {options.client} at full speed, {options.connections} connections, "
        f"{options.seconds:g} s per case; n=10; CPU: all workers, per request"
    )
    lines = [
        head,
        "",
        "| strategy | rec req/s | p50 ms | p99 ms | CPU ms/req | bare req/s | rec / bare "
        "| worker RSS MiB | ANN recall@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        recall = "" if row.recall is None else f"{row.recall:.3f}"
        rss = ", ".join(f"{r:.0f}" for r in row.rss_mib)
        lines.append(
            f"| {row.strategy} | {row.rec.rate:,.0f} | {row.rec.p50_ms:.2f} | "
            f"{row.rec.p99_ms:.2f} | {row.rec.cpu_ms:.3f} | {row.bare.rate:,.0f} | "
            f"{row.rec.rate / row.bare.rate:.3f} | {rss} | {recall} |"
        )
    errors = sum(row.rec.errors + row.bare.errors for row in rows)
    lines += ["", f"failed requests: {errors}"]
    return "\n".join(lines)


def parse_args() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per case")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--client", choices=("wrk", "python"), default=None)
    args = parser.parse_args()
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        parser.error(f"unknown strategies: {', '.join(sorted(unknown))}")
    client = args.client or ("wrk" if shutil.which("wrk") else "python")
    directory = Path(tempfile.mkdtemp(prefix="bench-strategies-"))
    return Options(
        args.seconds,
        args.workers,
        args.connections,
        args.items,
        args.users,
        strategies,
        client,
        directory,
    )


def main() -> None:
    options = parse_args()
    spec = ModelSpec(items=options.items, users=options.users)
    try:
        with scratch_database("recsys_bench_strategies") as database_url:
            run(options, spec, database_url)
    finally:
        shutil.rmtree(options.directory, ignore_errors=True)


def run(options: Options, spec: ModelSpec, database_url: str) -> None:
    """Build the versions, measure each strategy, print the table."""
    artifacts = options.directory / "artifacts"
    base = write_model(artifacts, spec)
    print(f"building {', '.join(options.strategies)} on {base.name}", flush=True)
    paths = {
        name: strategy_version(base, ServingStrategy(name=name)) for name in options.strategies
    }
    env = server_env(dict(os.environ), database_url, artifacts)
    key = recommend_key(database_url)
    rows = []
    try:
        for name, path in paths.items():
            rows.append(
                measure(name, path, env=env, key=key, database_url=database_url, options=options)
            )
    except Exception:
        log = options.directory / "servers.log"
        if log.exists():
            print(log.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        clear_redis(env)
    print()
    print(report(rows, options))


if __name__ == "__main__":
    main()
