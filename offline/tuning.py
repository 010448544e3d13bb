"""A hyper-parameter search (Optuna) on the retrain's own time-split holdout, metered and budgeted.

Each trial fits on the holdout's training matrix and is scored on the same holdout the
retrain's gate uses (offline/holdout.py), so its number means what the gate's means. Trial 0
is always the settings in force (the environment's defaults until something was applied):
the search reports by how much it beat them, and applies its best trial only when it beats
them, as a `retrain_settings` row that every later retrain then uses. One Meter measures the
whole search; a budget in trials, in money (priced with the price version in force), or both
ends it. Each trial is written to the `tuning_runs` row as it finishes, so progress shows.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import optuna
import psycopg

from offline import tuning_store as store
from offline.algorithms.ease import EaseTooLarge
from offline.holdout import Holdout, NoTrainingData, load_window, score_model, time_split_holdout
from offline.models import fit_model
from offline.retrain_overrides import StoredOverrides, overrides_in_force, save_overrides
from offline.tuning_space import (
    SearchSpace,
    TuningResult,
    beats,
    best_trial,
    check_budgets,
    chosen_fields,
    reference_trial,
)
from shared import cost_queries, costs
from shared.hardware import HostInfo
from shared.metering import Meter, PhaseMeasurement, PhaseProgress
from shared.model_spec import ModelParams
from shared.retrain_config import RetrainConfig, retrain_config
from shared.settings import Settings

log = logging.getLogger(__name__)
LOAD_PHASE = "tuning_load"
TRIAL_PHASE = "tuning_trial"
ABANDONED = "the process running the search stopped before it finished"
TrialCallback = Callable[[dict[str, Any]], None]


def run_tuning(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    max_trials: int | None = None,
    max_cost: float | None = None,
    metric: str = "ndcg",
    algorithm: str = "als",
    apply: bool = True,
    trigger: str = "cli",
    space: SearchSpace | None = None,
    on_trial: TrialCallback | None = None,
) -> TuningResult:
    """Search, record every trial, and (with `apply`) adopt the best settings if they win.

    Writes are committed as they happen, so pass a connection with no open work of its own.
    A budget error (no price in force for `max_cost`) raises before any row is written.
    """
    check_budgets(max_trials, max_cost, metric)
    space = space or SearchSpace.default(algorithm)
    price = costs.price_in_force(conn)
    if max_cost is not None and (price is None or price.currency != settings.cost_currency):
        raise ValueError(f"max_cost needs a price version in {settings.cost_currency} in force")
    store.fail_stale_tunings(
        conn, older_than_seconds=settings.task_time_limit_seconds, reason=ABANDONED
    )
    tuning_id = store.create_tuning(
        conn,
        trigger=trigger,
        metric=metric,
        max_trials=max_trials,
        max_cost=max_cost,
        currency=price.currency if price else None,
    )
    meter = Meter(energy=costs.energy_model(settings))
    in_force = overrides_in_force(conn)
    search = _Search(conn, tuning_id, meter, price=price, max_cost=max_cost, on_trial=on_trial)
    try:
        status, reason = _search(search, settings, in_force, space, metric, max_trials)
    except BaseException as exc:
        conn.rollback()
        error = f"{type(exc).__name__}: {exc}"
        store.finish_tuning(
            conn, tuning_id, status="failed", progress=search.progress(), error=error
        )
        _record_costs(conn, settings, tuning_id, meter)
        raise
    best, reference = best_trial(search.trials), reference_trial(search.trials)
    saved = None
    if apply and best is not None and reference is not None and beats(best, reference):
        saved = _adopt(conn, tuning_id, in_force, best, reference, metric)
    progress = search.progress()
    store.finish_tuning(
        conn, tuning_id, status=status, progress=progress, applied=bool(saved), error=reason
    )
    _record_costs(conn, settings, tuning_id, meter)
    return TuningResult(
        tuning_id=tuning_id,
        status=status,
        metric=metric,
        trials=search.trials,
        best=best,
        reference=reference,
        applied=saved is not None,
        settings_id=saved.settings_id if saved else None,
        cost=progress.cost,
        currency=price.currency if price else None,
        reason=reason,
    )


def _search(
    search: _Search,
    settings: Settings,
    in_force: StoredOverrides | None,
    space: SearchSpace,
    metric: str,
    max_trials: int | None,
) -> tuple[str, str | None]:
    """Load the holdout and run the study: (status, why it stopped early or failed)."""
    config = retrain_config(settings, in_force)
    try:
        with search.meter.measure(LOAD_PHASE):
            holdout = time_split_holdout(load_window(search.conn, config), config)
        search.check_budget(at="the start of the search")
    except NoTrainingData as exc:
        return "failed", str(exc)
    except costs.OverBudget as exc:
        return "over_budget", str(exc)
    space = space.including(config.model)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are reported in the row
    # Seeded from random_state and the number of earlier searches: reproducible from the
    # history, yet a weekly tune does not replay last week's random start-up trials.
    seed = settings.random_state + store.count_tunings(search.conn) - 1
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(space.point_of(config.model) or {}, user_attrs={"reference": True})
    objective = _Objective(
        search, holdout, config.model, space, metric=metric, k=config.k, config=config
    )
    try:
        study.optimize(objective, n_trials=max_trials, callbacks=[search.after_trial])
    except EaseTooLarge as exc:  # the catalogue, not a trial, is at fault: no trial can fit
        return "failed", str(exc)
    if search.stopped is not None:
        return "over_budget", search.stopped
    return "done", None


def _adopt(
    conn: psycopg.Connection,
    tuning_id: uuid.UUID,
    in_force: StoredOverrides | None,
    best: dict[str, Any],
    reference: dict[str, Any],
    metric: str,
) -> StoredOverrides | None:
    """Save the best trial as the settings in force, unless someone chose others meanwhile.

    The row keeps the rest of the previous choice (serving strategy, other model knobs): the
    newest row replaces the whole choice, and a tune only means to change what it searched.
    Not committed here: the caller commits it with the search's outcome, in one transaction.
    """
    now = overrides_in_force(conn)
    if _settings_id(now) != _settings_id(in_force):
        log.warning("tuning %s not applied: the settings in force changed meanwhile", tuning_id)
        return None
    k = best["metrics"]["k"]
    return save_overrides(
        conn,
        source="tuning",
        model={**(in_force.model if in_force else {}), **best["params"]},
        serving=in_force.serving if in_force else None,
        origin={"tuning_id": str(tuning_id), "trial": best["number"]},
        note=f"{metric}@{k} {best['value']:.4f} beats {reference['value']:.4f} (settings before)",
    )


def _settings_id(stored: StoredOverrides | None) -> int | None:
    return stored.settings_id if stored else None


class _Search:
    """What one search has measured and found so far, and its money budget."""

    def __init__(
        self,
        conn: psycopg.Connection,
        tuning_id: uuid.UUID,
        meter: Meter,
        *,
        price: costs.Price | None,
        max_cost: float | None,
        on_trial: TrialCallback | None,
    ) -> None:
        self.conn, self.tuning_id, self.meter = conn, tuning_id, meter
        self.price = price
        self.budget = costs.RunBudget(price, max_cost, meter.energy) if price and max_cost else None
        self.on_trial = on_trial
        self.trials: list[dict[str, Any]] = []
        self.stopped: str | None = None  # why the search stopped early (over budget)

    def check_budget(self, *, at: str, running: PhaseProgress | None = None) -> None:
        """Raise costs.OverBudget once everything measured so far costs more than max_cost."""
        if self.budget is not None:
            self.budget.check(self.meter.measurements, running, at=at)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna's callback: stop before the next trial once the money is spent."""
        if self.stopped is not None:  # a trial already stopped on the budget mid-fit
            return
        try:
            self.check_budget(at=f"the end of trial {trial.number}")
        except costs.OverBudget as exc:
            self.stopped = str(exc)
            study.stop()

    def record(self, record: dict[str, Any], measured: PhaseMeasurement | None) -> None:
        """Add a trial's record and what it cost to the row (committed: progress shows)."""
        if measured is not None:
            record["wall_seconds"] = measured.wall_seconds
            record["cpu_seconds"] = measured.cpu_seconds
            record["cost"] = costs.measurement_cost(self.price, measured) if self.price else None
        record["finished_at"] = datetime.now(UTC).isoformat()
        self.trials.append(record)
        store.record_trial(self.conn, self.tuning_id, record, self.progress())
        if self.on_trial is not None:
            self.on_trial(record)

    def progress(self) -> store.Progress:
        done = self.meter.measurements
        cost = None
        if self.price is not None:
            cost = sum(costs.measurement_cost(self.price, m) for m in done)
        best = best_trial(self.trials)
        return store.Progress(
            cpu_seconds=sum(m.cpu_seconds for m in done),
            cost=cost,
            best_params=best["params"] if best else None,
            best_value=best["value"] if best else None,
        )


@dataclass(frozen=True)
class _Objective:
    """One trial: fit on the holdout's training matrix, score on its test users."""

    search: _Search
    holdout: Holdout
    base: ModelParams  # the settings in force: what a trial does not choose comes from here
    space: SearchSpace
    metric: str
    k: int
    config: RetrainConfig

    def __call__(self, trial: optuna.Trial) -> float:
        reference = bool(trial.user_attrs.get("reference"))
        if reference and self.space.point_of(self.base) is None:
            params = self.base  # in force with another algorithm: compared as it is
        else:
            params = replace(self.base, **self.space.suggest(trial))
        record: dict[str, Any] = {
            "number": trial.number,
            "reference": reference,
            "params": chosen_fields(params),
        }
        progress: PhaseProgress | None = None
        try:
            with self.search.meter.measure(TRIAL_PHASE) as progress:
                model = fit_model(
                    self.holdout.train,
                    params,
                    events=self.holdout.train_events,
                    on_iteration=self._budget(progress, trial),
                    ease_max_items=self.config.ease_max_items,
                )
                metrics = score_model(model, self.holdout, self.k)
        except costs.OverBudget as exc:
            # Pruned, not failed: Optuna then logs no traceback and keeps the trial's params.
            measured = progress.measurement if progress else None
            self.search.record({**record, "state": "over_budget", "value": None}, measured)
            self.search.stopped = str(exc)
            trial.study.stop()
            raise optuna.TrialPruned(str(exc)) from None
        value = float(getattr(metrics, self.metric))
        done = {**record, "state": "complete", "value": value, "metrics": metrics.to_dict()}
        self.search.record(done, progress.measurement)
        return value

    def _budget(self, progress: PhaseProgress, trial: optuna.Trial) -> Callable[[int], None] | None:
        """Check the money budget after each fit iteration, so one big trial cannot run away."""
        if self.search.budget is None:
            return None
        search = self.search

        def check(n: int) -> None:
            search.check_budget(at=f"trial {trial.number} iteration {n}", running=progress)

        return check


def _record_costs(
    conn: psycopg.Connection, settings: Settings, tuning_id: uuid.UUID, meter: Meter
) -> None:
    """Put the search's phases on the training cost ledger (run_id = tuning_id); never raises.

    A search is training compute like a retrain, so it belongs in the daily totals.
    """
    try:
        costs.record_training_phases(
            conn,
            run_id=tuning_id,
            model_version=None,
            measurements=meter.measurements,
            host=HostInfo.detect(),
        )
        conn.commit()
        cost_queries.warn_on_daily_budgets(conn, settings, paths=("training",))
    except psycopg.Error:
        conn.rollback()
        log.exception("could not record the costs of tuning %s", tuning_id)
