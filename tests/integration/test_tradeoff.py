"""The tradeoff lab end to end on a small synthetic shop: sweep, choose, report, apply."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from celery import Celery
from typer.testing import CliRunner

from cli.main import app as cli
from offline.celery_app import create_celery_app
from offline.dataset import InteractionMatrix
from offline.retrain_overrides import overrides_in_force
from offline.runs import execute_run
from offline.tradeoff import store
from offline.tradeoff.apply import apply_choice
from offline.tradeoff.candidates import Candidate, resolve
from offline.tradeoff.costing import Workload
from offline.tradeoff.replay import Mix
from offline.tradeoff.sweep import current_config, run_inline, send_sweep, start_sweep
from offline.training import TrainedFactors, fit
from shared import registry
from shared.catalog import ItemIn, upsert_items
from shared.control.names import TRAINING_QUEUE
from shared.model_spec import ModelParams
from shared.settings import Settings
from shared.synthetic import ShopConfig, generate_catalog
from tests.conftest import TABLES_TO_CLEAN
from tests.processes import celery_env, delete_keys, running_worker, unique_key_prefix
from tests.shop import load_shop

pytestmark = [pytest.mark.timeout(240)]
SHOP = ShopConfig(n_users=700, n_items=300, n_categories=10, n_events=20_000, days=30, seed=5)
WORKLOAD = Workload(requests_per_day=10_000_000, retrains_per_day=1, api_processes=2)
MIX = Mix(requests=300)


@pytest.fixture(scope="module")
def shop_database(database_url: str) -> str:
    """The shop's events and catalogue, loaded once for this module."""
    with psycopg.connect(database_url) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES_TO_CLEAN)}")
    load_shop(database_url, SHOP)
    catalog = generate_catalog(SHOP)
    items = [
        ItemIn(item_id=str(i), category=str(c), available=bool(a))
        for i, c, a in zip(catalog.item_ids, catalog.categories, catalog.available, strict=True)
    ]
    with psycopg.connect(database_url) as conn:
        upsert_items(conn, items)
    return database_url


@pytest.fixture
def settings(shop_database: str, tmp_path: Path) -> Iterator[Settings]:
    yield Settings(
        database_url=shop_database, data_dir=tmp_path / "var", artifact_dir=tmp_path / "artifacts"
    )
    with psycopg.connect(shop_database) as conn:  # later tests start from the environment
        conn.execute(
            "TRUNCATE tradeoff_runs, tradeoff_candidates, retrain_settings, model_pointer,"
            " model_versions, training_runs, training_phase_usage"
        )


def _candidates(conn: psycopg.Connection, settings: Settings) -> list[Candidate]:
    config = current_config(conn, settings)
    model, serving = config.model, config.serving
    return [
        resolve(model, serving, {"factors": 1}, {"name": "exact"}, label="one factor"),
        resolve(model, serving, {"factors": 32}, {"name": "exact"}, label="f32 exact"),
        resolve(model, serving, {"factors": 32}, {"name": "float16"}),
        resolve(model, serving, {"factors": 32}, {"name": "precomputed"}),
        resolve(model, serving, {"factors": 32}, {"name": "batched"}),
        resolve(model, serving, {"factors": 32}, {"name": "ann", "ann_ef_search": 64}),
    ]


def _by_label(rows: list[store.CandidateRow]) -> dict[str, store.CandidateRow]:
    return {r.label: r for r in rows}


def test_inline_sweep_measures_ranks_and_chooses_above_the_floor(
    settings: Settings, tmp_path: Path
) -> None:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        run_id = start_sweep(
            conn, settings, workload=WORKLOAD, floor=0.97, mode="inline",
            candidates=_candidates(conn, settings), mix=MIX,
        )  # fmt: skip
        # A candidate that cannot be fitted: recorded as failed, the sweep goes on.
        conn.execute(
            "UPDATE tradeoff_candidates SET model = jsonb_set(model, '{factors}', '0')"
            " WHERE run_id = %s AND label = 'f32 exact'",
            (run_id,),
        )
        choice = run_inline(settings, run_id)
        run = store.get_run(conn, run_id)
        rows = store.candidates(conn, run_id)
    assert run is not None
    assert run.status == "done"
    labels = _by_label(rows)
    assert labels["f32 exact"].status == "failed"
    assert "factors" in (labels["f32 exact"].error or "")
    done = [r for r in rows if r.status == "done"]
    assert len(done) == len(rows) - 1
    one = labels["one factor"]
    good = [r for r in done if r.model["factors"] == 32]
    assert all((r.ndcg or 0) > (one.ndcg or 0) for r in good)
    for row in done:
        assert row.training_cost
        assert row.training_cost > 0
        assert row.train_cpu_seconds is not None
        assert row.train_cpu_seconds > 0
        assert row.serving_cpu_per_1000
        assert row.serving_cpu_per_1000 > 0
        assert row.p99_ms
        assert row.p99_ms > 0
        assert row.requests == MIX.requests
        assert row.artifact_bytes
        assert row.artifact_bytes > 0
        assert row.daily_cost
        assert row.daily_cost > 0
        assert row.processes
        assert row.processes >= 2
        # priced at every process size; the cheapest eligible one is the candidate's cost
        assert row.sizings is not None
        assert [z["vcpus_per_process"] for z in row.sizings] == [0.25, 0.5, 1.0]
        eligible = [z for z in row.sizings if z["eligible"]]
        cheapest = min(eligible, key=lambda z: z["total"])
        assert row.vcpus_per_process == cheapest["vcpus_per_process"]
        assert row.processes == cheapest["processes"]
    ann = next(r for r in done if r.serving["name"] == "ann")
    assert ann.ann_recall is not None
    assert 0.5 < ann.ann_recall <= 1.0
    assert run.baseline_candidate is not None
    assert rows[run.baseline_candidate].is_baseline
    chosen = rows[choice.chosen or 0]
    assert choice.chosen == run.chosen_candidate
    assert (chosen.ndcg or 0) >= 0.97 * max(r.ndcg or 0 for r in done) - 1e-12
    assert chosen.candidate_id != one.candidate_id
    assert chosen.on_frontier
    assert run.saving == pytest.approx(
        (rows[run.baseline_candidate].daily_cost or 0) - (chosen.daily_cost or 0)
    )

    env = {"RECSYS_DATABASE_URL": settings.require_database_url()}
    runner = CliRunner()
    shown = runner.invoke(cli, ["tradeoff", "show", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["run"]["chosen_candidate"] == choice.chosen
    html = tmp_path / "tradeoff.html"
    made = runner.invoke(cli, ["tradeoff", "report", str(run_id)[:8], "--html", str(html)], env=env)
    assert made.exit_code == 0, made.output
    page = html.read_text()
    assert "<svg" in page
    assert 'class="chosen"' in page
    assert "failed: " in page


def test_the_lab_measures_every_algorithm_and_refuses_what_a_kind_cannot_serve(
    settings: Settings,
) -> None:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        config = current_config(conn, settings)
        model, serving = config.model, config.serving
        knn = {"algorithm": "item_knn", "similarity": "cosine", "neighbours": 50}
        popularity = {"algorithm": "popularity", "recency_half_life_days": 7.0}
        candidates = [
            resolve(model, serving, knn, {"name": "exact"}, label="knn exact"),
            resolve(model, serving, knn, {"name": "precomputed"}, label="knn precomputed"),
            resolve(model, serving, knn, {"name": "ann"}, label="knn ann"),
            resolve(model, serving, {"algorithm": "ease"}, {"name": "batched"}, label="ease"),
            resolve(model, serving, popularity, {"name": "exact"}, label="popular"),
            resolve(model, serving, popularity, {"name": "float16"}, label="popular f16"),
        ]
        run_id = start_sweep(
            conn, settings, workload=WORKLOAD, floor=0.5, mode="inline",
            candidates=candidates, mix=MIX,
        )  # fmt: skip
        run_inline(settings, run_id)
        labels = _by_label(store.candidates(conn, run_id))
    for label in ("knn exact", "knn precomputed", "ease", "popular"):
        row = labels[label]
        assert row.status == "done", row.error
        assert row.ndcg is not None
        assert row.ndcg > 0
        assert row.training_cost
        assert row.training_cost > 0
        assert row.serving_cpu_per_1000
        assert row.serving_cpu_per_1000 > 0
        assert row.requests == MIX.requests
    # precomputed lists of an item-item model are its exact ranking
    assert labels["knn precomputed"].ndcg == pytest.approx(labels["knn exact"].ndcg)
    assert labels["knn ann"].status == "failed"
    assert "needs factors" in (labels["knn ann"].error or "")
    assert labels["popular f16"].status == "failed"
    assert "popularity" in (labels["popular f16"].error or "")


def test_a_model_setting_is_fitted_once_for_all_its_strategies(settings: Settings) -> None:
    fits: list[ModelParams] = []

    def counting_fit(matrix: InteractionMatrix, params: ModelParams) -> TrainedFactors:
        fits.append(params)
        return fit(matrix, params)

    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        config = current_config(conn, settings)
        three = [
            resolve(config.model, config.serving, {}, {"name": name})
            for name in ("exact", "float16", "precomputed")
        ]
        run_id = start_sweep(
            conn, settings, workload=WORKLOAD, floor=0.5, mode="inline", candidates=three, mix=MIX
        )
        run_inline(settings, run_id, fit_function=counting_fit)
        rows = store.candidates(conn, run_id)
    assert len(fits) == 1  # the settings in force: the baseline shares the same fit
    assert {"exact", "float16", "precomputed"} <= {r.serving["name"] for r in rows}
    assert all(r.status == "done" for r in rows), rows
    # every candidate records (and is charged) the one whole fit
    assert len({(r.train_wall_seconds, r.train_cpu_seconds) for r in rows}) == 1
    fit_cpu = rows[0].train_cpu_seconds
    assert fit_cpu is not None
    assert fit_cpu > 0
    assert all(r.training_cost and r.training_cost > 0 for r in rows)


def test_a_failed_fit_fails_its_models_candidates_and_a_failed_strategy_only_its_own(
    settings: Settings,
) -> None:
    def failing_fit(matrix: InteractionMatrix, params: ModelParams) -> TrainedFactors:
        if params.factors == 8:
            raise RuntimeError("out of memory")
        return fit(matrix, params)

    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        config = current_config(conn, settings)
        model, serving = config.model, config.serving
        four = [
            resolve(model, serving, {"factors": 8}, {"name": "exact"}, label="f8 exact"),
            resolve(model, serving, {"factors": 8}, {"name": "float16"}, label="f8 float16"),
            resolve(model, serving, {"factors": 12}, {"name": "exact"}, label="f12 exact"),
            resolve(model, serving, {"factors": 12}, {"name": "float16"}, label="f12 float16"),
        ]
        run_id = start_sweep(
            conn, settings, workload=WORKLOAD, floor=0.5, mode="inline", candidates=four, mix=MIX
        )
        conn.execute(  # a strategy that cannot be built: fails its candidate only
            "UPDATE tradeoff_candidates SET serving = serving || '{\"bogus\": 1}'"
            " WHERE run_id = %s AND label = 'f12 float16'",
            (run_id,),
        )
        seen: list[str] = []
        run_inline(
            settings, run_id, fit_function=failing_fit, on_candidate=lambda r: seen.append(r.label)
        )
        run = store.get_run(conn, run_id)
        labels = _by_label(store.candidates(conn, run_id))
    assert run is not None
    assert run.status == "done"
    for label in ("f8 exact", "f8 float16"):
        assert labels[label].status == "failed"
        assert labels[label].error == "RuntimeError: out of memory"
    assert labels["f12 float16"].status == "failed"
    assert "bogus" in (labels["f12 float16"].error or "")
    assert labels["f12 exact"].status == "done"
    assert sorted(seen) == sorted(labels)


def test_apply_stores_the_choice_and_its_retrain_goes_through_the_gate(
    settings: Settings,
) -> None:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        config = current_config(conn, settings)
        few = [resolve(config.model, config.serving, {"factors": 16}, {"name": "float16"})]
        run_id = start_sweep(
            conn, settings, workload=WORKLOAD, floor=0.5, mode="inline", candidates=few, mix=MIX
        )
        run_inline(settings, run_id)
        applied = apply_choice(conn, settings, run_id, candidate_id=1)
        assert applied.trigger.created
        outcome = execute_run(settings, applied.trigger.run_id)
        in_force = overrides_in_force(conn)
        run = store.get_run(conn, run_id)
        retrain = registry.get_run(conn, applied.trigger.run_id)
        version = registry.get_version(conn, outcome.version or "")
    assert in_force is not None
    assert in_force.source == "tradeoff"
    assert in_force.origin == {"tradeoff_run": str(run_id), "candidate": 1}
    assert in_force.model["factors"] == 16
    assert in_force.serving["name"] == "float16"
    assert "num_threads" not in in_force.model
    assert run is not None
    assert run.applied
    assert run.applied_retrain == applied.trigger.run_id
    assert outcome.status in ("promoted", "rejected")
    assert outcome.reason
    assert retrain is not None
    assert retrain.model_version == outcome.version
    assert retrain.trigger == "tradeoff"
    assert retrain.forced
    assert version is not None
    assert version.params["factors"] == 16
    assert version.status == outcome.status
    assert version.reason


@pytest.mark.e2e
def test_a_sweep_fans_out_to_a_real_worker(
    settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    prefix = unique_key_prefix()
    on_broker = settings.model_copy(update={"redis_url": redis_url, "redis_key_prefix": prefix})
    client: Celery = create_celery_app(on_broker)
    env = celery_env(
        redis_url=redis_url,
        database_url=settings.require_database_url(),
        key_prefix=prefix,
        data_dir=tmp_path / "var",
    )
    try:
        with (
            running_worker(client, env, tmp_path / "worker.log", concurrency=2) as worker,
            psycopg.connect(settings.require_database_url(), autocommit=True) as conn,
        ):
            config = current_config(conn, settings)
            three = [  # two tasks: f24 fitted once for both of its strategies
                resolve(config.model, config.serving, {"factors": 1}, {}),
                resolve(config.model, config.serving, {"factors": 24}, {"name": "precomputed"}),
                resolve(config.model, config.serving, {"factors": 24}, {"name": "float16"}),
            ]
            run_id = start_sweep(
                conn, on_broker, workload=WORKLOAD, floor=0.9, mode="celery",
                candidates=three, mix=MIX,
            )  # fmt: skip
            send_sweep(client, conn, run_id, queue=TRAINING_QUEUE)
            run = _wait_for(conn, run_id, timeout=120, log=worker.log)
            rows = store.candidates(conn, run_id)
    finally:
        client.close()
        delete_keys(redis_url, prefix)
    assert run.status == "done", rows
    assert run.task_id
    assert all(r.status == "done" and r.daily_cost for r in rows)
    assert run.chosen_candidate is not None
    assert rows[run.chosen_candidate].model["factors"] != 1


def _wait_for(
    conn: psycopg.Connection, run_id: uuid.UUID, *, timeout: float, log: object
) -> store.TradeoffRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.get_run(conn, run_id)
        if run is not None and run.status != "running":
            return run
        time.sleep(0.5)
    raise TimeoutError(f"tradeoff run {run_id} did not finish:\n{log() if callable(log) else log}")


def test_cli_runs_inline_applies_and_retrains(settings: Settings, tmp_path: Path) -> None:
    candidates = tmp_path / "candidates.json"
    candidates.write_text(
        json.dumps({"models": [{"factors": 1}, {"factors": 24}], "strategies": ["exact"]})
    )
    env = {
        "RECSYS_DATABASE_URL": settings.require_database_url(),
        "RECSYS_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "RECSYS_DATA_DIR": str(tmp_path / "var"),
    }
    args = ["tradeoff", "run", "--inline", "--candidates", str(candidates), "--requests", "100",
            "--requests-per-day", "1000000", "--floor", "0.95", "--apply", "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["settings"]["source"] == "tradeoff"
    assert answer["candidate"]["model"]["factors"] == 24
    assert answer["retrain"]["status"] in ("promoted", "rejected")
    assert answer["retrain"]["model_version"]
    again = CliRunner().invoke(cli, ["tradeoff", "apply", "nonexistent"], env=env)
    assert again.exit_code == 2
