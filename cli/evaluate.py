"""`recsys evaluate`: what a retrain would choose, measured now, with nothing published.

The shop's retrain window is loaded and split exactly as a retrain does it (the same
settings, the runtime overrides in force, the same time-split holdout); every candidate of
the selection (offline/selection.py) is fitted on the training side and scored on the test
users, and the table shows them all, the one a retrain would publish marked `*`. The
database is opened read-only: no run, version or artifact is written.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

import psycopg
import typer

from cli.context import cli_context, fail, print_json
from cli.tables import print_table
from offline.holdout import Holdout, NoTrainingData, load_window, time_split_holdout
from offline.retrain_overrides import overrides_in_force
from offline.selection import Selection, money_spent, select
from shared import costs
from shared.metering import Meter
from shared.retrain_config import RetrainConfig, retrain_config
from shared.settings import Settings


class Algorithm(StrEnum):
    auto = "auto"
    als = "als"
    bpr = "bpr"
    item_knn = "item_knn"
    ease = "ease"
    popularity = "popularity"


def evaluate(
    ctx: typer.Context,
    algorithm: Algorithm | None = typer.Option(
        None,
        "--algorithm",
        help="auto (select among candidates) or one algorithm to pin, like RECSYS_ALGORITHM; "
        "unset: as configured.",
    ),
    k: int | None = typer.Option(None, "--k", min=1, max=1000, help="Top-k (default eval_k)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Fit and score every candidate a retrain would compare, publishing nothing."""
    context = cli_context(ctx)
    try:
        with psycopg.connect(context.database_url()) as conn:
            conn.read_only = True
            config = _config(conn, context.settings, algorithm, k)
            events = load_window(conn, config)
            price = costs.price_in_force(conn)  # for a money budget
        config = replace(config, confidence=config.confidence.resolved_for(events))
        holdout = time_split_holdout(events, config)
        meter = Meter(energy=costs.energy_model(context.settings))
        with meter.measure("selection") as progress:  # prices a money budget like a retrain
            selection = select(holdout, config, spent=money_spent(config, price, meter, progress))
    except NoTrainingData as exc:
        raise fail(f"nothing to evaluate: {exc}", 2) from None
    except RuntimeError as exc:  # no candidate could be scored
        raise fail(str(exc), 1) from None
    if as_json:
        print_json({**selection.to_dict(), "k": config.k, "users": len(holdout.users)})
        return
    _print(selection, holdout, config, n_events=len(events))


def _config(
    conn: psycopg.Connection, settings: Settings, algorithm: Algorithm | None, k: int | None
) -> RetrainConfig:
    """The retrain's config; `--algorithm` wins over a stored choice, as the flag is explicit."""
    if algorithm is not None:
        settings = settings.model_copy(update={"algorithm": algorithm.value})
    config = retrain_config(settings, overrides_in_force(conn))
    if algorithm is not None and config.algorithm != algorithm.value:
        pinned = config.model.algorithm if algorithm is Algorithm.auto else algorithm.value
        config = replace(
            config, algorithm=algorithm.value, model=replace(config.model, algorithm=pinned)
        )
    return config if k is None else replace(config, k=k)


def _print(selection: Selection, holdout: Holdout, config: RetrainConfig, *, n_events: int) -> None:
    users, items = holdout.train.shape
    typer.echo(
        f"window: {n_events:,} events; training split {users:,} users x {items:,} items; "
        f"{len(holdout.users):,} test users; algorithm {config.algorithm}; "
        f"gate metric {selection.metric}@{config.k}"
    )
    at_k = [f"{name}@{config.k}" for name in ("precision", "recall", "ndcg", "map")]
    print_table(
        ["", "candidate", "algorithm", *at_k, "coverage", "fit cpu s", "eval cpu s", "note"],
        [
            [
                "*" if c is selection.best else "",
                c.label,
                c.params.algorithm,
                *(
                    [m.precision, m.recall, m.ndcg, m.map, m.coverage]
                    if (m := c.metrics)
                    else [None] * 5
                ),
                c.fit_cpu_seconds,
                c.evaluate_cpu_seconds,
                c.note or "",
            ]
            for c in selection.candidates
        ],
    )
    typer.echo(
        f"* would be chosen: {selection.best.label} "
        f"(selection CPU {selection.cpu_seconds:.2f} s; nothing was published)"
    )
