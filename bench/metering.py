"""What metering costs: serving throughput and a retrain, each with metering on and off.

    python -m bench.metering [--seconds 15] [--rounds 3] [--events 300000]

Serving: the same 20,000-item model behind two `recsys serve --workers 2` processes, one with
RECSYS_METERING=true (usage recorder + Prometheus, the default) and one with false, loaded in
turn by wrk on random known users' recommendations (order alternating per round). Training:
the retrain pipeline on the same synthetic shop with the standard Meter (sampling thread,
CPU/RSS/energy at each phase boundary) and with a meter that measures nothing, alternating.
Targets: <= 2 % throughput lost serving, <= 1 % time added training.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench.common import median, scratch_database
from bench.serve import running, server_env, serving, wait_until, wrk, wrk_script
from bench.serve_fixtures import ModelSpec, publish, recommend_key, user_ids, write_model
from offline.pipeline import run_retrain
from shared import registry
from shared.metering import EnergyModel, Meter
from shared.retrain_config import retrain_config
from shared.settings import Settings
from shared.synthetic import ShopConfig
from tests.shop import load_shop


class NoMeter:
    """The pipeline's meter interface, measuring nothing: the 'metering off' baseline."""

    measurements: list[Any] = []

    @contextmanager
    def measure(self, phase: str) -> Iterator[None]:
        yield None


def serving_rounds(seconds: float, rounds: int, directory: Path) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"on": [], "off": []}
    with scratch_database("recsys_bench_metering") as url:
        spec = ModelSpec(items=20_000)
        path = write_model(directory / "artifacts", spec)
        publish(url, path)
        key = recommend_key(url)
        rng = np.random.default_rng(2)
        users = user_ids(spec.users)[rng.integers(0, spec.users, 20_000)]
        script = wrk_script(
            directory, "metering", [f"/v1/users/{u}/recommendations?n=10" for u in users], key
        )
        base = server_env(dict(os.environ), url, directory / "artifacts")
        log = directory / "servers.log"
        recsys = [str(Path(sys.executable).with_name("recsys")), "serve", "--workers", "2"]
        envs = {
            mode: {
                **base,
                "RECSYS_METERING": flag,
                "RECSYS_REDIS_KEY_PREFIX": f"bench-metering-{mode}-{uuid.uuid4().hex[:6]}:",
            }
            for mode, flag in (("on", "true"), ("off", "false"))
        }
        with running(recsys, envs["on"], log) as on, running(recsys, envs["off"], log) as off:
            for server in (on, off):
                wait_until(partial(serving, server, path.name, 2), f"serving; see {log}")
                wrk(server, script, seconds=2, connections=32)  # warm up
            for round_ in range(rounds):
                order = [("on", on), ("off", off)]
                for mode, server in order if round_ % 2 == 0 else order[::-1]:
                    load = wrk(server, script, seconds=seconds, connections=32)
                    rates[mode].append(load.rate)
                    print(
                        f"  serving, metering {mode:<3}: {load.rate:8,.0f} req/s "
                        f"(p99 {load.p99_ms:.2f} ms, {load.errors} errors)",
                        flush=True,
                    )
    return rates


def training_rounds(events: int, rounds: int, directory: Path) -> dict[str, list[float]]:
    walls: dict[str, list[float]] = {"on": [], "off": []}
    config = ShopConfig(
        n_users=events // 20,
        n_items=events // 50,
        n_categories=30,
        n_events=events,
        days=60,
        seed=5,
    )
    with scratch_database("recsys_bench_metering_train") as url:
        load_shop(url, config)
        settings = Settings(database_url=url, artifact_dir=directory / "train-artifacts")
        retrain = retrain_config(settings)
        warm_up = ["off"]  # untimed: the first retrain pays for imports, caches and pages
        for round_ in range(rounds):
            order = ["on", "off"] if round_ % 2 == 0 else ["off", "on"]
            for mode in warm_up + order:
                meter: Any = Meter(energy=EnergyModel()) if mode == "on" else NoMeter()
                with psycopg.connect(url, autocommit=True) as conn:
                    run_id = registry.create_run(conn, trigger="bench", forced=True, settings={})
                    started = time.perf_counter()
                    run_retrain(
                        conn,
                        run_id=run_id,
                        config=retrain,
                        artifact_dir=settings.artifact_dir,
                        meter=meter,
                    )
                    elapsed = time.perf_counter() - started
                    registry.finish_run(conn, run_id, status="skipped", reason="benchmark")
                if warm_up:
                    warm_up = []
                    continue
                walls[mode].append(elapsed)
                print(f"  retrain, metering {mode:<3}: {elapsed:6.2f} s", flush=True)
    return walls


def meter_own_cost(phases: int = 200, sampled_seconds: float = 3.0) -> tuple[float, float]:
    """What the meter itself costs, measured directly instead of as a difference of two noisy
    retrains: wall seconds to open and close one empty phase (clocks, RAPL and NVML probes,
    the sampler thread's start and stop), and the sampler thread's CPU seconds per second of
    a phase (measured over an idle phase, so all CPU the process used is the sampler's)."""
    meter = Meter(energy=EnergyModel())
    started = time.perf_counter()
    for i in range(phases):
        with meter.measure(f"empty-{i}"):
            pass
    per_phase = (time.perf_counter() - started) / phases
    cpu = time.process_time()
    with meter.measure("idle"):
        time.sleep(sampled_seconds)
    per_second = (time.process_time() - cpu) / sampled_seconds
    return per_phase, per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=300_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-metering-") as tmp:
        directory = Path(tmp)
        rates = serving_rounds(args.seconds, args.rounds, directory)
        walls = training_rounds(args.events, args.rounds, directory)
    on, off = median(rates["on"]), median(rates["off"])
    t_on, t_off = median(walls["on"]), median(walls["off"])
    print(
        f"serving : {on:,.0f} req/s metered, {off:,.0f} unmetered: "
        f"{(1 - on / off) * 100:+.1f} % throughput lost (target <= 2 %)"
    )
    print(
        f"training: {t_on:.2f} s metered, {t_off:.2f} s unmetered: "
        f"{(t_on / t_off - 1) * 100:+.1f} % time added (target <= 1 %)"
    )
    per_phase, per_second = meter_own_cost()
    phases = 7  # load, build, fit, evaluate, final_fit, export, and the run's own bookkeeping
    added = phases * per_phase + t_off * per_second
    print(
        f"meter's own cost: {per_phase * 1000:.2f} ms a phase, sampler "
        f"{per_second * 1000:.2f} ms CPU a second: {added * 1000:.1f} ms on a {t_off:.2f} s "
        f"retrain, {added / t_off * 100:.2f} % (target <= 1 %)"
    )


if __name__ == "__main__":
    main()
