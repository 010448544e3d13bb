"""Tradeoff benchmark: the default settings against the sweep's choice, priced for a workload.

Loads a synthetic shop into a scratch database (setup, not measured; as bench/retrain.py
does), runs an inline tradeoff sweep over the default grid (every candidate fitted, scored
on the time-split holdout and served in-process), and prints each candidate and the daily
cost of the current (default) settings against the chosen candidate, both priced with the
same price version for the same workload: 10 million requests and one retrain a day.

    python -m bench.tradeoff [--events 1000000] [--users 50000] [--items 20000]
                             [--requests-per-day 10000000] [--retrains-per-day 1]
                             [--requests 2000] [--floor 0.97] [--strategies exact,float16,...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import bench_shop, scratch_database
from bench.retrain import setup_shop
from offline.tradeoff import store
from offline.tradeoff.candidates import default_grid
from offline.tradeoff.costing import Workload
from offline.tradeoff.replay import Mix
from offline.tradeoff.report import sizing_line
from offline.tradeoff.sweep import current_config, run_inline, start_sweep
from shared import costs
from shared.catalog import ItemIn, upsert_items
from shared.serving_strategy import STRATEGIES
from shared.settings import Settings
from shared.synthetic import ShopConfig, generate_catalog


def load_catalog(url: str, shop: ShopConfig) -> None:
    """The shop's catalogue (categories make the mix's filtered requests possible)."""
    catalog = generate_catalog(shop)
    items = [
        ItemIn(item_id=str(i), category=str(c), available=bool(a))
        for i, c, a in zip(catalog.item_ids, catalog.categories, catalog.available, strict=True)
    ]
    with psycopg.connect(url) as conn:
        for start in range(0, len(items), 10_000):
            upsert_items(conn, items[start : start + 10_000])


def print_candidate(row: store.CandidateRow) -> None:
    if row.status != "done":
        print(f"  #{row.candidate_id:<3} {row.label:<34} FAILED {row.error}", flush=True)
        return
    print(
        f"  #{row.candidate_id:<3} {row.label:<34} ndcg {row.ndcg or 0:.4f}"
        f"  fit {row.train_cpu_seconds or 0:6.2f} CPU s  retrain {row.training_cost or 0:.3g}"
        f"  serve {row.serving_cpu_per_1000 or 0:6.3f} CPU s/1k  p99 {row.p99_ms or 0:6.2f} ms"
        f"  rss +{(row.rss_growth_bytes or 0) / 2**20:.0f} MiB",
        flush=True,
    )


def print_verdict(run: store.TradeoffRun, rows: list[store.CandidateRow]) -> None:
    by_id = {r.candidate_id: r for r in rows}
    print(
        "\n| candidate | NDCG@10 | processes x vCPU | training/day | serving used/day "
        "| idle capacity/day | memory/day | total/day | frontier |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in sorted((r for r in rows if r.daily_cost is not None), key=lambda r: r.daily_cost or 0):
        mark = " **(chosen)**" if r.candidate_id == run.chosen_candidate else ""
        print(
            f"| {r.label}{mark} | {r.ndcg or 0:.4f} | {r.processes} x {r.vcpus_per_process or 0:g} "
            f"| {r.daily_training or 0:.4f} "
            f"| {r.daily_serving_used or 0:.4f} | {r.daily_capacity_idle or 0:.4f} "
            f"| {r.daily_memory or 0:.4f} | {r.daily_cost or 0:.4f} "
            f"| {'yes' if r.on_frontier else ''} |"
        )
    base = by_id.get(run.baseline_candidate) if run.baseline_candidate is not None else None
    chosen = by_id.get(run.chosen_candidate) if run.chosen_candidate is not None else None
    print(f"\nprice version {run.price_id}, {run.currency}; workload {run.workload}")
    if base is not None:
        print(f"current settings: {base.label}: {base.daily_cost or 0:.4f} {run.currency}/day, "
              f"NDCG {base.ndcg or 0:.4f}")  # fmt: skip
    if chosen is not None:
        print(
            f"chosen: {chosen.label}: {chosen.daily_cost or 0:.4f} {run.currency}/day, NDCG "
            f"{chosen.ndcg or 0:.4f} (floor {run.floor:g} x best {run.best_ndcg or 0:.4f})"
        )
    if run.saving is not None and base is not None and base.daily_cost:
        print(f"saving: {run.saving:.4f} {run.currency}/day ({run.saving / base.daily_cost:.1%})")
    if chosen is not None:
        print(f"chosen candidate's {sizing_line(chosen)}")
    if base is not None:
        print(f"current settings' {sizing_line(base)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--categories", type=int, default=50)
    parser.add_argument("--requests-per-day", type=float, default=10_000_000)
    parser.add_argument("--retrains-per-day", type=float, default=1.0)
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument(
        "--vcpus-per-process", type=float, default=None, help="fixed size (default: compared)"
    )
    parser.add_argument("--requests", type=int, default=2_000, help="replayed per candidate")
    parser.add_argument("--floor", type=float, default=0.97)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args()

    shop = bench_shop(args)
    workload = Workload(
        requests_per_day=args.requests_per_day,
        retrains_per_day=args.retrains_per_day,
        api_processes=args.api_processes,
        vcpus_per_process=args.vcpus_per_process,
    )
    with (
        scratch_database("recsys_bench_tradeoff") as url,
        tempfile.TemporaryDirectory(prefix="recsys-bench-") as artifacts,
    ):
        started = time.perf_counter()
        setup_shop(url, shop)
        load_catalog(url, shop)
        print(f"setup (not measured): {args.events:,} events loaded in "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        settings = Settings(database_url=url, artifact_dir=Path(artifacts))
        with psycopg.connect(url, autocommit=True) as conn:
            config = current_config(conn, settings)
            price = costs.price_in_force(conn)
            assert price is not None
            print(f"price version {price.price_id}: vCPU-hour {price.vcpu_hour} {price.currency}, "
                  f"GiB-hour {price.ram_gb_hour} ({price.source[:60]})")  # fmt: skip
            grid = default_grid(config.model, config.serving, args.strategies.split(","))
            run_id = start_sweep(
                conn, settings, workload=workload, floor=args.floor, mode="inline",
                candidates=grid, mix=Mix(requests=args.requests),
            )  # fmt: skip
            print(f"tradeoff run {run_id}: {len(store.candidates(conn, run_id))} candidates")
            started = time.perf_counter()
            run_inline(settings, run_id, on_candidate=print_candidate)
            print(f"sweep: {time.perf_counter() - started:.0f} s")
            run = store.get_run(conn, run_id)
            assert run is not None
            print_verdict(run, store.candidates(conn, run_id))


if __name__ == "__main__":
    main()
