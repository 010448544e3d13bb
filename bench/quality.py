"""Quality benchmark: what `RECSYS_ALGORITHM=auto` buys on the holdout, and what it costs.

Builds a shop's events in memory, without a database (setup, not measured): the synthetic
shop (shared.synthetic), or a CSV given with --file, either in the product's import columns
(user_id,item_id,type,value,occurred_at with ISO 8601 or epoch-second times) or a rating log
(userId,movieId,rating,timestamp: every row a rating, epoch seconds). The time-split holdout
is built with the product's default settings (`retrain_config(Settings())`), then, per round:
the selection (`offline.selection.select`: every candidate fitted on the training split and
scored on the test users), one final refit of the winner on the whole window (`fit_model`),
and, for comparison, a single ALS fit with the ModelParams defaults on the training split.
CPU is time.process_time() (all threads of this process).

Printed: each candidate's NDCG@k and fit CPU; the `auto` retrain's CPU (every candidate's
fit + evaluate, plus the final refit) over the single ALS fit's CPU (target: <= 3x); and the
chosen candidate's NDCG over the best candidate's on this holdout (1.0 by construction when
the gate metric is NDCG: the selection picks the best it measured; the line says so).
Medians over --rounds.

    python -m bench.quality [--file PATH] [--users 50000] [--items 20000] [--events 1000000]
                            [--rounds 1]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv

from bench.common import bench_shop, median
from offline.holdout import Holdout, build_matrix_for, time_split_holdout
from offline.models import fit_model
from offline.selection import Selection, select
from shared.confidence import EventColumns
from shared.model_spec import ModelParams
from shared.retrain_config import RetrainConfig, retrain_config
from shared.settings import Settings

IMPORT_COLUMNS = ("user_id", "item_id", "type", "value", "occurred_at")
RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")
TARGET_RATIO = 3.0


def synthetic_events(args: argparse.Namespace) -> EventColumns:
    """The synthetic shop's log, encoded as the retrain's loader would."""
    from shared.synthetic import generate_catalog, generate_events

    shop = bench_shop(args)
    log = generate_events(shop, generate_catalog(shop))
    return EventColumns.from_arrays(
        log.user_ids, log.item_ids, log.types, values=log.values, occurred_at=log.occurred_at
    )


def csv_events(path: Path) -> EventColumns:
    """A CSV in the import columns or the rating-log shape (see the docstring)."""
    names = set(csv.open_csv(path).schema.names)
    text = pa.string()
    if set(RATING_COLUMNS) <= names:
        table = csv.read_csv(
            path,
            convert_options=csv.ConvertOptions(
                include_columns=list(RATING_COLUMNS),
                column_types={"userId": text, "movieId": text, "rating": pa.float64()},
            ),
        )
        return EventColumns.from_arrays(
            table["userId"].to_numpy(),
            table["movieId"].to_numpy(),
            np.full(table.num_rows, "rating", dtype=object),
            values=table["rating"].to_numpy(),
            occurred_at=table["timestamp"].to_numpy().astype(np.float64),
        )
    if not set(IMPORT_COLUMNS) - {"value"} <= names:
        raise SystemExit(f"{path}: expected the columns {IMPORT_COLUMNS} or {RATING_COLUMNS}")
    table = csv.read_csv(
        path,
        convert_options=csv.ConvertOptions(
            include_columns=[c for c in IMPORT_COLUMNS if c in names],
            column_types={"user_id": text, "item_id": text, "type": text, "value": pa.float64()},
        ),
    )
    values = table["value"].to_numpy(zero_copy_only=False) if "value" in names else None
    return EventColumns.from_arrays(
        table["user_id"].to_numpy(zero_copy_only=False),
        table["item_id"].to_numpy(zero_copy_only=False),
        table["type"].to_numpy(zero_copy_only=False),
        values=values,
        occurred_at=epoch_seconds(table["occurred_at"]),
    )


def epoch_seconds(column: pa.ChunkedArray) -> np.ndarray:
    """ISO 8601 times (as pyarrow read them, or as text) or epoch seconds, as float seconds."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return column.to_numpy().astype(np.float64)
    if not pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.timestamp("us", tz="UTC"))
    micros = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
    return micros.to_numpy().astype(np.float64) / 1e6


@dataclass(frozen=True)
class Round:
    selection: Selection
    final_fit_cpu: float  # the winner refitted on the whole window
    als_fit_cpu: float  # one ALS fit, ModelParams defaults, on the training split

    @property
    def auto_cpu(self) -> float:
        return self.selection.cpu_seconds + self.final_fit_cpu

    @property
    def ratio(self) -> float:
        return self.auto_cpu / self.als_fit_cpu

    @property
    def chosen_over_best(self) -> float:
        scored = [c.metrics.ndcg for c in self.selection.candidates if c.metrics]
        best = max(scored)
        chosen = self.selection.best.metrics
        assert chosen is not None
        return chosen.ndcg / best if best > 0 else float("nan")


def measure(holdout: Holdout, config: RetrainConfig, events: EventColumns) -> Round:
    full = build_matrix_for(events, config)  # what a retrain publishes from; not timed
    selection = select(holdout, config)
    started = time.process_time()
    fit_model(full, selection.best.params, events=events, ease_max_items=config.ease_max_items)
    final_fit = time.process_time() - started
    started = time.process_time()
    fit_model(holdout.train, ModelParams())
    return Round(selection, final_fit, time.process_time() - started)


def report(rounds: list[Round], config: RetrainConfig) -> None:
    k, first = config.k, rounds[0].selection
    print(f"\n{'candidate':<24} {'ndcg@' + str(k):>8} {'fit CPU s':>11} {'eval CPU s':>11}  note")
    for i, candidate in enumerate(first.candidates):
        runs = [r.selection.candidates[i] for r in rounds]
        ndcgs = [c.metrics.ndcg for c in runs if c.metrics]
        ndcg = f"{median(ndcgs):.4f}" if ndcgs else "-"
        fit_cpu = median([c.fit_cpu_seconds for c in runs])
        evaluate_cpu = median([c.evaluate_cpu_seconds for c in runs])
        line = f"{candidate.label:<24} {ndcg:>8} {fit_cpu:>11.2f} {evaluate_cpu:>11.2f}"
        print(f"{line}  {candidate.note or ''}".rstrip())
    chosen = sorted({r.selection.best.label for r in rounds})
    print(f"chosen (gate metric {first.metric}): {', '.join(chosen)}")
    auto, als = median([r.auto_cpu for r in rounds]), median([r.als_fit_cpu for r in rounds])
    print(
        f"auto retrain CPU: {auto:.2f} s (selection "
        f"{median([r.selection.cpu_seconds for r in rounds]):.2f} + final refit "
        f"{median([r.final_fit_cpu for r in rounds]):.2f}); single ALS fit CPU: {als:.2f} s"
    )
    ratio = median([r.ratio for r in rounds])
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"auto / single ALS fit CPU: {ratio:.2f}x (target <= {TARGET_RATIO:g}x: {verdict})")
    quality = median([r.chosen_over_best for r in rounds])
    how = (
        "1.0 by construction: the gate metric is NDCG and the chosen one is the best measured"
        if first.metric == "ndcg"
        else f"the selection ranks by {first.metric}, not NDCG"
    )
    print(f"chosen NDCG / best candidate NDCG: {quality:.3f} ({how})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="a CSV of events instead of the synthetic shop")
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--categories", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    started = time.perf_counter()
    if args.file:
        events, source = csv_events(args.file), str(args.file)
    else:
        events = synthetic_events(args)
        source = f"synthetic shop, {args.users:,} users x {args.items:,} items"
    config = retrain_config(Settings())
    config = replace(config, confidence=config.confidence.resolved_for(events))
    holdout = time_split_holdout(events, config)
    users, items = holdout.train.shape
    print(
        f"{source}: {len(events):,} events; training split {users:,} users x {items:,} items, "
        f"{len(holdout.users):,} test users (setup, not measured: "
        f"{time.perf_counter() - started:.0f} s)"
    )
    rounds = []
    for number in range(1, args.rounds + 1):
        rounds.append(measure(holdout, config, events))
        last = rounds[-1]
        print(
            f"round {number}: chosen {last.selection.best.label}; auto {last.auto_cpu:.2f} s CPU, "
            f"single ALS fit {last.als_fit_cpu:.2f} s CPU ({last.ratio:.2f}x)"
        )
    print(f"medians over {len(rounds)} round{'s' if len(rounds) > 1 else ''}")
    report(rounds, config)


if __name__ == "__main__":
    main()
