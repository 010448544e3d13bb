"""Hyper-parameter searches on a tiny planted shop: the real database, broker and worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from redbeat import RedBeatSchedulerEntry
from typer.testing import CliRunner

from cli.main import app as cli
from offline.celery_app import create_celery_app
from offline.retrain_overrides import overrides_in_force, save_overrides
from offline.tuning import run_tuning
from offline.tuning_space import SearchSpace
from offline.tuning_store import get_tuning
from shared import costs
from shared.control.names import TRAINING_QUEUE, TUNE
from shared.control.schedule import (
    TUNE_ENTRY,
    list_schedules,
    set_retrain_schedule,
    set_tune_schedule,
)
from shared.retrain_config import retrain_config
from shared.settings import Settings
from shared.synthetic import ShopConfig
from tests.processes import celery_env, running_worker
from tests.shop import load_shop

pytestmark = pytest.mark.timeout(120)
TINY_SHOP = ShopConfig(n_users=300, n_items=120, n_categories=8, n_events=6_000, days=20, seed=7)
# Narrow and cheap, so each trial takes milliseconds; trial 0 (the defaults) widens it.
SMALL_SPACE = SearchSpace(
    "als", factors=(4, 32), iterations=(2, 12), regularization=(0.01, 50.0), alpha=(0.5, 20.0)
)
# Settings in force so weak that any sensible trial beats them.
WEAK = {"factors": 1, "iterations": 1, "regularization": 10_000.0}


@pytest.fixture
def shop(settings: Settings) -> Settings:
    load_shop(settings.require_database_url(), TINY_SHOP)
    return settings.model_copy(update={"training_threads": 1})


def _row(conn: psycopg.Connection, tuning_id: uuid.UUID) -> Any:
    conn.commit()
    row = get_tuning(conn, tuning_id)
    assert row is not None
    return row


def test_a_search_records_every_trial_and_beats_or_keeps_the_defaults(
    shop: Settings, conn: psycopg.Connection
) -> None:
    result = run_tuning(conn, shop, max_trials=5, space=SMALL_SPACE, trigger="test")
    row = _row(conn, result.tuning_id)
    assert (row.status, row.trigger, row.metric, row.max_trials) == ("done", "test", "ndcg", 5)
    assert [t["number"] for t in row.trials] == [0, 1, 2, 3, 4]
    assert all(t["state"] == "complete" and t["cpu_seconds"] > 0 for t in row.trials)
    trial0 = row.trials[0]
    assert trial0["reference"]
    assert trial0["params"] == {
        "algorithm": "als",
        "factors": 64,
        "iterations": 15,
        "regularization": 5.0,
        "alpha": 2.0,
    }
    assert result.reference == trial0
    assert result.best is not None
    assert row.best_value == result.best["value"] >= trial0["value"] > 0
    assert row.best_params == result.best["params"]
    assert row.cost is not None
    assert row.cost > 0
    assert row.currency == "USD"
    # Applied exactly when it beat the defaults; then every later retrain uses its choice.
    stored = overrides_in_force(conn)
    assert row.applied == result.applied == (result.best["value"] > trial0["value"])
    if result.applied:
        assert stored is not None
        assert stored.source == "tuning"
        assert stored.origin == {"tuning_id": str(row.tuning_id), "trial": result.best["number"]}
        assert stored.settings_id == result.settings_id
    else:
        assert stored is None
    # The search's phases are on the training cost ledger under its id.
    phases = conn.execute(
        "SELECT phase, count(*) FROM training_phase_usage WHERE run_id = %s GROUP BY phase",
        (row.tuning_id,),
    ).fetchall()
    assert dict(phases) == {"tuning_load": 1, "tuning_trial": 5}


def test_a_better_trial_is_applied_and_the_next_retrain_carries_it(
    shop: Settings, conn: psycopg.Connection
) -> None:
    before = save_overrides(
        conn, source="operator", model=WEAK, serving={"name": "exact"}, note="weak"
    )
    conn.commit()
    result = run_tuning(conn, shop, max_trials=4, space=SMALL_SPACE)
    assert result.best is not None
    assert result.reference is not None
    assert result.reference["params"]["factors"] == 1  # trial 0: the settings in force
    assert result.improvement is not None
    assert result.improvement > 0
    assert result.applied
    stored = overrides_in_force(conn)
    assert stored is not None
    assert stored.settings_id == result.settings_id != before.settings_id
    assert (stored.source, stored.origin["tuning_id"]) == ("tuning", str(result.tuning_id))
    assert stored.serving == {"name": "exact"}  # the rest of the previous choice is kept
    model = retrain_config(shop, stored).model
    best = result.best["params"]
    assert (model.factors, model.effective_iterations) == (best["factors"], best["iterations"])
    assert model.effective_regularization == pytest.approx(best["regularization"])
    assert model.alpha == pytest.approx(best["alpha"])
    assert _row(conn, result.tuning_id).applied


def test_without_apply_or_without_a_gain_nothing_is_saved(
    shop: Settings, conn: psycopg.Connection
) -> None:
    save_overrides(conn, source="operator", model=WEAK)
    conn.commit()
    dry = run_tuning(conn, shop, max_trials=3, space=SMALL_SPACE, apply=False)
    assert dry.improvement is not None
    assert dry.improvement > 0
    assert not dry.applied
    again = run_tuning(conn, shop, max_trials=2, space=SMALL_SPACE, apply=False)
    assert again.trials[1]["params"] != dry.trials[1]["params"]  # a new search explores anew
    only_trial0 = run_tuning(conn, shop, max_trials=1, space=SMALL_SPACE)
    assert only_trial0.best == only_trial0.reference
    assert not only_trial0.applied
    assert conn.execute("SELECT count(*) FROM retrain_settings").fetchone() == (1,)


@pytest.mark.parametrize("algorithm", ["item_knn", "ease", "popularity"])
def test_every_algorithm_can_be_tuned_and_its_best_settings_applied(
    shop: Settings, conn: psycopg.Connection, algorithm: str
) -> None:
    result = run_tuning(conn, shop, max_trials=4, algorithm=algorithm, trigger="test")
    row = _row(conn, result.tuning_id)
    assert row.status == "done", row.error
    assert all(t["state"] == "complete" for t in row.trials)
    explored = [t["params"] for t in row.trials[1:]]
    assert explored
    assert all(p["algorithm"] == algorithm for p in explored)
    knobs = set(SearchSpace.default(algorithm).searched())
    assert all(set(p) == {"algorithm", *knobs} for p in explored)
    if result.applied:  # the next retrain fits the tuned algorithm with the tuned knobs
        assert result.best is not None
        model = retrain_config(shop, overrides_in_force(conn)).model
        assert model.algorithm == algorithm
        for name in knobs:
            assert getattr(model, name) == pytest.approx(result.best["params"][name])


def test_tuning_ease_over_its_item_limit_fails_with_the_reason(
    shop: Settings, conn: psycopg.Connection
) -> None:
    small = shop.model_copy(update={"ease_max_items": 10})
    result = run_tuning(conn, small, max_trials=3, algorithm="ease")
    row = _row(conn, result.tuning_id)
    assert row.status == "failed"
    assert "RECSYS_EASE_MAX_ITEMS" in row.error
    assert not result.applied


def test_a_cost_budget_stops_the_search_as_over_budget(
    shop: Settings, conn: psycopg.Connection
) -> None:
    result = run_tuning(conn, shop, max_cost=1e-12, space=SMALL_SPACE)
    row = _row(conn, result.tuning_id)
    assert row.status == result.status == "over_budget"
    assert row.max_cost == 1e-12
    assert row.error is not None
    assert "passed the ceiling" in row.error
    assert row.trials == []  # loading the holdout alone spent it
    assert row.cost is not None
    assert row.cost > 1e-12
    assert not row.applied


@pytest.fixture
def dear_price(conn: psycopg.Connection) -> Iterator[None]:
    """One CPU-second costs 1 USD from now on, so a budget of 1 USD ends after a few trials."""
    price = costs.add_price(
        conn,
        valid_from=datetime.now(UTC),
        currency="USD",
        vcpu_hour=3600.0,
        ram_gb_hour=0.0,
        gpu_hour=0.0,
        kwh=0.0,
        source="test",
    )
    conn.commit()
    yield
    conn.rollback()
    conn.execute("DELETE FROM price_book WHERE price_id = %s", (price.price_id,))
    conn.commit()


@pytest.mark.usefixtures("dear_price")
def test_a_cost_budget_stops_a_search_between_or_during_trials(
    shop: Settings, conn: psycopg.Connection
) -> None:
    space = SearchSpace("als", (32, 64), (20, 40), (0.1, 10.0), alpha=(1.0, 4.0))
    result = run_tuning(conn, shop, max_trials=500, max_cost=1.0, space=space)
    row = _row(conn, result.tuning_id)
    assert row.status == "over_budget"
    assert 1 <= len(row.trials) < 500
    assert row.cost > 1.0
    assert "passed the ceiling" in row.error


def test_a_search_without_events_fails_with_the_reason(
    settings: Settings, conn: psycopg.Connection
) -> None:
    result = run_tuning(conn, settings, max_trials=3)
    row = _row(conn, result.tuning_id)
    assert (row.status, row.error, row.trials) == ("failed", "there are no events", [])
    assert not result.applied


def test_max_cost_without_a_price_in_that_currency_is_refused(
    shop: Settings, conn: psycopg.Connection
) -> None:
    euros = shop.model_copy(update={"cost_currency": "EUR"})
    with pytest.raises(ValueError, match="price version in EUR"):
        run_tuning(conn, euros, max_cost=1.0)
    assert conn.execute("SELECT count(*) FROM tuning_runs").fetchone() == (0,)


def test_the_cli_runs_a_search_and_shows_it(shop: Settings) -> None:
    env = {"RECSYS_DATABASE_URL": shop.require_database_url(), "RECSYS_TRAINING_THREADS": "1"}
    runner = CliRunner()
    ran = runner.invoke(cli, ["tune", "run", "--max-trials", "2", "--no-apply", "--json"], env=env)
    assert ran.exit_code == 0, ran.output
    answer = orjson.loads(ran.stdout)
    assert (answer["status"], answer["applied"], len(answer["trials"])) == ("done", False, 2)
    shown = runner.invoke(cli, ["tune", "show", answer["tuning_id"][:8], "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert orjson.loads(shown.stdout)["tuning_id"] == answer["tuning_id"]
    text = runner.invoke(cli, ["tune", "show"], env=env)  # the newest, for people
    assert text.exit_code == 0, text.output
    assert answer["tuning_id"] in text.output
    refused = runner.invoke(cli, ["tune", "run"], env=env)
    assert refused.exit_code == 2
    assert "budget" in refused.output


@pytest.mark.e2e
def test_the_tune_task_runs_on_a_real_worker(
    shop: Settings, redis_settings: Settings, tmp_path: Path
) -> None:
    settings = redis_settings.model_copy(update={"training_threads": 1})
    assert settings.redis_url is not None
    env = celery_env(
        redis_url=settings.redis_url,
        database_url=settings.require_database_url(),
        key_prefix=settings.redis_key_prefix,
        data_dir=tmp_path / "var",
        extra={"RECSYS_TRAINING_THREADS": "1"},
    )
    client = create_celery_app(settings)
    try:
        with running_worker(client, env, tmp_path / "worker.log"):
            sent = client.send_task(
                TUNE, kwargs={"max_trials": 2, "trigger": "test"}, queue=TRAINING_QUEUE
            )
            answer = sent.get(timeout=90)
            sent.forget()
            queued = CliRunner().invoke(
                cli, ["tune", "run", "--max-trials", "1", "--queue", "--json"], env=env
            )
            assert queued.exit_code == 0, queued.output
            by_cli = client.AsyncResult(orjson.loads(queued.stdout)["task_id"]).get(timeout=90)
    finally:
        client.close()
    assert answer["status"] == "done"
    with psycopg.connect(settings.require_database_url()) as conn:
        row = get_tuning(conn, uuid.UUID(answer["tuning_id"]))
        queued_row = get_tuning(conn, uuid.UUID(by_cli["tuning_id"]))
    assert row is not None
    assert (row.trigger, row.status, len(row.trials)) == ("test", "done", 2)
    assert queued_row is not None
    assert (queued_row.trigger, queued_row.status, len(queued_row.trials)) == ("cli", "done", 1)


def test_a_weekly_tune_is_scheduled_next_to_the_daily_retrain(redis_settings: Settings) -> None:
    app = create_celery_app(redis_settings)
    try:
        set_retrain_schedule(app, cron="0 4 * * *")
        tune = set_tune_schedule(app, cron="0 3 * * 0", max_trials=30)
        found = list_schedules(app)
        key = f"{app.conf.redbeat_key_prefix}{TUNE_ENTRY}"
        entry = RedBeatSchedulerEntry.from_key(key, app=app)
    finally:
        app.close()
    assert set(found) == {"retrain", "tune"}
    assert replace(found["tune"], next_run_at=None) == replace(tune, next_run_at=None)
    assert tune.next_run_at is not None
    assert (tune.next_run_at.weekday(), tune.next_run_at.hour) == (6, 3)  # Sunday, 03:00 UTC
    assert (tune.cron, tune.enabled) == ("0 3 * * 0", True)
    assert tune.options == {
        "max_trials": 30,
        "max_cost": None,
        "metric": "ndcg",
        "algorithm": "als",
        "apply": True,
        "trigger": "schedule",
    }
    assert found["retrain"].cron == "0 4 * * *"
    assert (entry.task, entry.options["queue"]) == (TUNE, TRAINING_QUEUE)  # where beat sends it


def test_the_schedule_cli_sets_lists_and_pauses_a_tune(redis_settings: Settings) -> None:
    env = {
        "RECSYS_DATABASE_URL": redis_settings.require_database_url(),
        "RECSYS_REDIS_URL": str(redis_settings.redis_url),
        "RECSYS_REDIS_KEY_PREFIX": redis_settings.redis_key_prefix,
    }
    runner = CliRunner()

    def recsys(*args: str) -> Any:
        done = runner.invoke(cli, list(args), env=env)
        assert done.exit_code == 0, done.output
        return orjson.loads(done.stdout)

    cron = ["--cron", "0 3 * * 0"]
    made = recsys("schedule", "set", "tune", *cron, "--max-cost", "0.5", "--no-apply", "--json")
    assert made["options"]["max_cost"] == 0.5
    assert made["options"]["apply"] is False
    listed = recsys("schedule", "list", "--json")
    assert [(e["kind"], e["cron"]) for e in listed] == [("tune", "0 3 * * 0")]
    assert recsys("schedule", "pause", "tune", "--json")["enabled"] is False
    assert recsys("schedule", "show", "tune", "--json")["enabled"] is False
    assert recsys("schedule", "show", "--json") is None  # no retrain entry was set
    assert recsys("schedule", "set", "--cron", "0 4 * * *", "--json")["cron"] == "0 4 * * *"
    listed = recsys("schedule", "list", "--json")
    assert [(e["kind"], e["enabled"]) for e in listed] == [("retrain", True), ("tune", False)]
    table = runner.invoke(cli, ["schedule", "list"], env=env)
    assert "max_cost=0.5" in table.output
    no_budget = runner.invoke(cli, ["schedule", "set", "tune", *cron], env=env)
    assert no_budget.exit_code == 2
    retrain_with_trials = runner.invoke(
        cli, ["schedule", "set", *cron, "--max-trials", "3"], env=env
    )
    assert retrain_with_trials.exit_code == 2
