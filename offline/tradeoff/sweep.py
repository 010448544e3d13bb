"""A sweep's life: start it (rows first), measure candidates inline or as Celery tasks, finish.

Each distinct model setting is fitted once per sweep and its model served by every strategy
candidate that shares it (`candidates.by_model`), inline and in the fan-out alike. The
fan-out is a chord: one task per model setting on the training queue, then one task that
prices them all. A measuring task records each candidate's outcome as it ends (measured, or
failed with the error) and never raises, so one bad candidate cannot stop the chord or the
sweep: a failed fit fails that model's candidates, a failed strategy only its own candidate.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import psycopg
from celery import Celery, chord

from offline.retrain_overrides import overrides_in_force
from offline.tradeoff import costing, store
from offline.tradeoff.candidates import (
    Candidate,
    baseline_candidate,
    by_model,
    default_grid,
    with_baseline,
)
from offline.tradeoff.measure import FitFunction, fit_model, measure_strategy
from offline.tradeoff.prepared import Prepared, prepare
from offline.tradeoff.replay import Mix
from shared import costs
from shared.confidence import ConfidenceSettings
from shared.control.names import TRADEOFF_FINISH, TRADEOFF_MEASURE
from shared.metering import Meter
from shared.model_spec import ModelParams
from shared.retrain_config import RetrainConfig, retrain_config
from shared.serving_strategy import ServingStrategy
from shared.settings import Settings

log = logging.getLogger(__name__)


class NoPrice(RuntimeError):
    """No price version is in force: a sweep has nothing to price its figures with."""


def current_config(conn: psycopg.Connection, settings: Settings) -> RetrainConfig:
    """The retrain settings in force (environment + the newest retrain_settings row)."""
    return retrain_config(settings, overrides_in_force(conn))


def start_sweep(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    workload: costing.Workload,
    floor: float,
    mode: str,
    candidates: Sequence[Candidate] | None = None,
    mix: Mix | None = None,
) -> uuid.UUID:
    """Record a sweep and its candidates (the settings in force always among them)."""
    if not 0 < floor <= 1:
        raise ValueError("floor must be in (0, 1]")
    config = current_config(conn, settings)
    price = costs.price_in_force(conn)
    if price is None:
        raise NoPrice("no price version is in force (recsys costs prices add ...)")
    chosen = candidates if candidates is not None else default_grid(config.model, config.serving)
    everyone = with_baseline(chosen, baseline_candidate(config.model, config.serving))
    return store.create_run(
        conn,
        mode=mode,
        workload=workload.to_dict(),
        floor=floor,
        price_id=price.price_id,
        currency=price.currency,
        config={"retrain": config.to_dict(), "mix": asdict(mix or Mix())},
        candidates=everyone,
    )


def run_inline(
    settings: Settings,
    run_id: uuid.UUID,
    *,
    on_candidate: Callable[[store.CandidateRow], None] | None = None,
    fit_function: FitFunction | None = None,
) -> costing.Choice:
    """Measure every candidate here (one prepared holdout, one fit per model setting), then
    finish; `on_candidate` sees each candidate's row as soon as it is recorded."""
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        rows = store.candidates(conn, run_id)
        try:
            prepared = _prepare(conn, settings, run_id)
        except Exception as exc:
            store.finish_run(conn, run_id, status="failed", error=_error(exc))
            raise
        measure_candidates(
            conn,
            settings,
            run_id,
            [row.candidate_id for row in rows],
            prepared=prepared,
            on_candidate=on_candidate,
            fit_function=fit_function,
        )
        return finish_sweep(conn, run_id)


def send_sweep(app: Celery, conn: psycopg.Connection, run_id: uuid.UUID, *, queue: str) -> str:
    """Queue the chord: a measure task per model setting (all its candidates), then the
    finishing task."""
    rows = store.candidates(conn, run_id)
    groups = by_model((row.candidate_id, row.candidate()) for row in rows)
    header = [
        app.signature(TRADEOFF_MEASURE, args=[str(run_id), ids], queue=queue) for ids in groups
    ]
    callback = app.signature(TRADEOFF_FINISH, args=[str(run_id)], queue=queue, immutable=True)
    result = chord(header, app=app)(callback)
    store.set_task_id(conn, run_id, result.id)
    return str(result.id)


def measure_candidates(
    conn: psycopg.Connection,
    settings: Settings,
    run_id: uuid.UUID,
    candidate_ids: Sequence[int],
    *,
    prepared: Prepared | None = None,
    on_candidate: Callable[[store.CandidateRow], None] | None = None,
    fit_function: FitFunction | None = None,
) -> dict[int, str]:
    """Measure the given candidates, fitting each distinct model setting among them once, and
    record each one as it ends; returns each candidate's status ("done" or "failed").

    Failures are recorded, never raised: a failed preparation or fit fails every candidate of
    that model with the error, a failed strategy only its own candidate.
    """
    run = store.get_run(conn, run_id)
    rows = [store.get_candidate(conn, run_id, i) for i in candidate_ids]
    found = [row for row in rows if row is not None]
    if run is None or len(found) != len(rows):
        raise ValueError(f"no candidates {list(candidate_ids)} in tradeoff run {run_id}")
    by_id = {row.candidate_id: row for row in found}
    outcomes: dict[int, str] = {}
    for group in by_model((row.candidate_id, row.candidate()) for row in found):
        members = [by_id[i] for i in group]
        for row in members:
            store.start_candidate(conn, run_id, row.candidate_id)
        meter = Meter(energy=costs.energy_model(settings))
        try:
            price = costs.get_price(conn, run.price_id)
            assert price is not None, "the sweep's price version disappeared"
            if prepared is None:
                prepared = _prepare(conn, settings, run_id)
            params = members[0].candidate().params()
            fitted = fit_model(prepared, params, meter=meter, fit_function=fit_function)
        except Exception as exc:
            log.warning("tradeoff model of candidates %s of %s failed: %s", group, run_id, exc)
            conn.rollback()
            for row in members:
                outcomes[row.candidate_id] = _fail(conn, run_id, row.candidate_id, exc)
                _notify(conn, run_id, row.candidate_id, on_candidate)
            continue
        for row in members:
            try:
                measured = measure_strategy(
                    prepared,
                    fitted,
                    row.candidate(),
                    price=price,
                    meter=meter,
                    mix=Mix(**run.config["mix"]),
                    active_users=run.workload.get("active_users"),
                )
            except Exception as exc:
                log.warning("tradeoff candidate %s of %s failed: %s", row.candidate_id, run_id, exc)
                conn.rollback()
                outcomes[row.candidate_id] = _fail(conn, run_id, row.candidate_id, exc)
            else:
                store.record_measurement(conn, run_id, row.candidate_id, measured)
                outcomes[row.candidate_id] = "done"
            _notify(conn, run_id, row.candidate_id, on_candidate)
        del fitted
    return outcomes


def _fail(conn: psycopg.Connection, run_id: uuid.UUID, candidate_id: int, exc: Exception) -> str:
    store.fail_candidate(conn, run_id, candidate_id, _error(exc))
    return "failed"


def _notify(
    conn: psycopg.Connection,
    run_id: uuid.UUID,
    candidate_id: int,
    on_candidate: Callable[[store.CandidateRow], None] | None,
) -> None:
    if on_candidate is not None:
        row = store.get_candidate(conn, run_id, candidate_id)
        assert row is not None
        on_candidate(row)


def finish_sweep(conn: psycopg.Connection, run_id: uuid.UUID) -> costing.Choice:
    """Price the measured candidates for the sweep's workload, mark the frontier, choose."""
    run = store.get_run(conn, run_id)
    price = costs.get_price(conn, run.price_id) if run else None
    if run is None or price is None:
        raise ValueError(f"no tradeoff run {run_id} (or its price version)")
    workload = costing.Workload.from_dict(run.workload)
    rates = costing.Rates(float(price.vcpu_hour), float(price.ram_gb_hour))
    measured = [row for row in store.candidates(conn, run_id) if row.status == "done"]
    daily = {
        row.candidate_id: costing.daily_cost(_measured(row), workload, rates) for row in measured
    }
    points = [
        costing.Priced(row.candidate_id, daily[row.candidate_id].total, row.ndcg or 0.0)
        for row in measured
    ]
    frontier = costing.pareto_frontier(points)
    choice = costing.choose(points, floor=run.floor, baseline=run.baseline_candidate)
    with conn.transaction():
        for candidate_id, cost in daily.items():
            store.record_cost(
                conn, run_id, candidate_id, cost, on_frontier=candidate_id in frontier
            )
        if choice.chosen is None:
            store.finish_run(conn, run_id, status="failed", error="every candidate failed")
        else:
            store.finish_run(
                conn,
                run_id,
                status="done",
                chosen=choice.chosen,
                best_ndcg=choice.best_ndcg,
                saving=choice.saving,
            )
    return choice


def _measured(row: store.CandidateRow) -> costing.Measured:
    return costing.Measured(
        ndcg=row.ndcg or 0.0,
        training_cost=row.training_cost or 0.0,
        serving_cpu_per_1000=row.serving_cpu_per_1000 or 0.0,
        rss_growth_bytes=row.rss_growth_bytes or 0,
        p99_ms=row.p99_ms or 0.0,
    )


def _prepare(conn: psycopg.Connection, settings: Settings, run_id: uuid.UUID) -> Prepared:
    run = store.get_run(conn, run_id)
    assert run is not None
    config = config_from_dict(run.config["retrain"])
    return prepare(conn, config, meter=Meter(energy=costs.energy_model(settings)))


def config_from_dict(data: dict[str, Any]) -> RetrainConfig:
    """A RetrainConfig back from `to_dict` (as the sweep recorded it)."""
    return RetrainConfig(
        **{
            **data,
            "confidence": ConfidenceSettings(**data["confidence"]),
            "model": ModelParams.from_dict(data["model"]),
            "serving": ServingStrategy.from_dict(data["serving"]),
        }
    )


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]
