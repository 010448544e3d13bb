"""Retraining end to end: a real `recsys worker` on a real broker, the real database."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from celery import Celery

from offline.celery_app import create_celery_app
from offline.runs import execute_run
from shared import artifacts, registry
from shared.control.names import RETRAIN, TRAINING_QUEUE
from shared.control.retrain import request_retrain
from shared.settings import Settings
from tests.processes import (
    Started,
    celery_env,
    delete_keys,
    running_worker,
    start_recsys,
    start_worker,
    stop,
    unique_key_prefix,
    wait_until_ready,
)
from tests.shop import SMALL_SHOP, load_shop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
FINISHED = {"promoted", "rejected", "skipped", "failed"}


@pytest.fixture(scope="module")
def shop_database(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        conn.execute("TRUNCATE events, event_ids, model_pointer, model_versions, training_runs")
    load_shop(database_url, SMALL_SHOP)
    return database_url


@pytest.fixture(scope="module")
def key_prefix(redis_url: str) -> Iterator[str]:
    prefix = unique_key_prefix()
    yield prefix
    delete_keys(redis_url, prefix)


@pytest.fixture(scope="module")
def settings(
    shop_database: str, redis_url: str, key_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    root = tmp_path_factory.mktemp("retrain")
    return Settings(
        database_url=shop_database,
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        data_dir=root / "var",
        artifact_dir=root / "artifacts",
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[Celery]:
    app = create_celery_app(settings)
    yield app
    app.close()


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    assert settings.redis_url
    assert settings.database_url
    return celery_env(
        redis_url=settings.redis_url,
        database_url=settings.database_url,
        key_prefix=settings.redis_key_prefix,
        data_dir=settings.data_dir,
        extra={
            "RECSYS_ARTIFACT_DIR": str(settings.artifact_dir),
            "RECSYS_BEAT_MAX_LOOP_INTERVAL": "1",
            **extra,
        },
    )


def trigger(settings: Settings, client: Celery, *, force: bool = False) -> uuid.UUID:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        answer = request_retrain(conn, settings, trigger="test", force=force)
        assert answer.created
        result = client.send_task(RETRAIN, args=[str(answer.run_id)], queue=TRAINING_QUEUE)
        registry.set_task_id(conn, answer.run_id, result.id)
    return answer.run_id


def wait_for_run(
    settings: Settings,
    run_id: uuid.UUID,
    *,
    statuses: set[str] = FINISHED,
    phase: str | None = None,
    timeout: float = 120,
) -> registry.Run:
    deadline = time.monotonic() + timeout
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            run = registry.get_run(conn, run_id)
            assert run is not None
            if run.status in statuses and (phase is None or run.phase == phase):
                return run
            time.sleep(0.2)
    raise TimeoutError(f"run {run_id} not {statuses} / {phase} within {timeout} s: {run}")


def live(settings: Settings) -> registry.ModelVersion | None:
    with psycopg.connect(settings.require_database_url()) as conn:
        return registry.promoted_version(conn)


def test_a_retrain_through_the_broker_publishes_the_best_candidate_of_its_selection(
    settings: Settings, client: Celery, tmp_path: Path
) -> None:
    """`auto` (the default): every candidate scored on the holdout, the best one published."""
    with running_worker(client, worker_env(settings), tmp_path / "worker.log"):
        run = wait_for_run(settings, trigger(settings, client, force=True))
    assert run.status == "promoted", run
    version = live(settings)
    assert version is not None
    assert version.version == run.model_version
    loaded = artifacts.read_version(Path(version.artifact_path))  # checksums verified
    assert loaded.manifest.algorithm == version.algorithm
    assert len(loaded.arrays["item_popularity"]) == len(loaded.arrays["item_ids"])
    metrics = run.metrics
    candidates = metrics["selection"]["candidates"]
    algorithms = {c["algorithm"] for c in candidates}
    assert {"popularity", "item_knn", "als", "ease"} <= algorithms
    best = max(c["metrics"]["ndcg"] for c in candidates if c["metrics"])
    assert metrics["candidate"]["ndcg"] == best
    assert metrics["candidate"]["ndcg"] >= metrics["popularity"]["ndcg"]
    chosen = next(c for c in candidates if c["label"] == metrics["selection"]["chosen"])
    assert chosen["algorithm"] == version.algorithm
    assert [p["phase"] for p in run.phases] == [
        "load",
        "build",
        "fit",
        "evaluate",
        "final_fit",
        "export",
    ]


def test_no_new_event_means_the_next_retrain_is_skipped(settings: Settings) -> None:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        answer = request_retrain(conn, settings, trigger="test", force=False)
    outcome = execute_run(settings, answer.run_id)
    assert outcome.status == "skipped"
    assert "no event arrived" in (outcome.reason or "")


def test_a_popularity_ranking_that_beats_the_model_is_published(
    settings: Settings, tmp_path: Path
) -> None:
    """A pinned, hopeless ALS loses to the popularity baselines: with no live version the
    winning popularity ranking is published as a popularity version, and the run says so."""
    fresh = settings.model_copy(update={"artifact_dir": tmp_path / "artifacts"})
    weak = fresh.model_copy(
        update={"algorithm": "als", "factors": 1, "iterations": 1, "regularization": 1e4}
    )
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        pointer = registry.pointer(conn)
        conn.execute("DELETE FROM model_pointer")
        try:
            answer = request_retrain(conn, weak, trigger="test", force=True)
            outcome = execute_run(weak, answer.run_id)
            published = registry.get_version(conn, outcome.version or "")
        finally:
            conn.execute("DELETE FROM model_pointer")
            if pointer is not None:
                registry.promote_version(conn, pointer[0], moved_by="test")
    assert outcome.status == "promoted", outcome
    assert published is not None
    assert published.algorithm == "popularity"
    assert (outcome.reason or "").startswith("popularity")


def test_a_weak_configuration_is_judged_against_live_by_the_gate(settings: Settings) -> None:
    """A pinned, hopeless ALS: its best candidate (a popularity baseline, then) is published
    only if it is within the tolerance of the live version's settings on the same holdout;
    otherwise the run is rejected and the live version stays."""
    before = live(settings)
    assert before is not None
    weak = settings.model_copy(
        update={"algorithm": "als", "factors": 1, "iterations": 1, "regularization": 1e4}
    )
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        answer = request_retrain(conn, weak, trigger="test", force=True)
    outcome = execute_run(weak, answer.run_id)
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        run = registry.get_run(conn, answer.run_id)
        judged = registry.get_version(conn, outcome.version or "")
        assert run is not None
        assert judged is not None
        best, current = run.metrics["candidate"]["ndcg"], run.metrics["live"]["ndcg"]
        assert run.metrics["live_version"] == before.version
        chosen = run.metrics["selection"]["chosen"]
        assert chosen.startswith("popularity")  # the hopeless ALS never wins
        after = live(settings)
        assert after is not None
        if best < current * (1 - weak.gate_tolerance):
            assert outcome.status == judged.status == "rejected"
            assert "worse than live" in (outcome.reason or "")
            assert after.version == before.version
            assert not judged.promoted
        else:
            assert outcome.status == judged.status == "promoted"
            assert after.version == judged.version
            registry.promote_version(conn, before.version, moved_by="test")  # as it was


def test_two_simultaneous_triggers_give_one_run(settings: Settings) -> None:
    answers = []
    barrier = threading.Barrier(2)

    def fire() -> None:
        with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
            barrier.wait()
            answers.append(request_retrain(conn, settings, trigger="test", force=True))

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({a.run_id for a in answers}) == 1
    assert sorted(a.created for a in answers) == [False, True]
    outcome = execute_run(settings, answers[0].run_id)  # clear it for the tests after
    assert outcome.status in {"promoted", "rejected"}


def test_a_worker_killed_mid_fit_leaves_a_failed_run_and_the_live_version(
    settings: Settings, client: Celery, tmp_path: Path
) -> None:
    before = live(settings)
    assert before is not None
    versions_before = artifacts.list_versions(settings.artifact_dir)
    slow = worker_env(settings, RECSYS_ITERATIONS="10000")
    worker = start_worker(slow, tmp_path / "slow-worker.log")
    try:
        wait_until_ready(client, worker)
        run_id = trigger(settings, client, force=True)
        wait_for_run(settings, run_id, statuses={"running"}, phase="fit")
        _kill_tree(worker)
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait()
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        # The next trigger notices the dead run (the retrain lock is free again).
        deadline = time.monotonic() + 30
        while (run := registry.get_run(conn, run_id)) and run.status == "running":
            request_retrain(conn, settings, trigger="test", force=False)
            assert time.monotonic() < deadline, "the killed run was never marked failed"
            time.sleep(0.5)
        assert run is not None
        assert run.status == "failed"
        assert "worker" in (run.error or "")
        queued = registry.active_run(conn)
        if queued is not None:
            registry.finish_run(conn, queued.run_id, status="skipped", reason="test cleanup")
    after = live(settings)
    assert after is not None
    assert after.version == before.version
    assert artifacts.list_versions(settings.artifact_dir) == versions_before
    assert not [p for p in settings.artifact_dir.iterdir() if p.name.startswith(".tmp-")]


def test_a_schedule_set_through_the_cli_fires(
    settings: Settings, client: Celery, tmp_path: Path
) -> None:
    env = worker_env(settings)
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        newest = registry.list_runs(conn, limit=1)
        seen = {r.run_id for r in registry.list_runs(conn, limit=100)}
    assert newest
    set_schedule = start_recsys(
        ["schedule", "set", "--cron", "* * * * *", "--json"], env, tmp_path / "schedule.log"
    )
    assert set_schedule.process.wait(timeout=30) == 0, set_schedule.log()
    beat = start_recsys(["beat", "--loglevel", "info"], env, tmp_path / "beat.log")
    try:
        with running_worker(client, env, tmp_path / "worker.log"):
            run = _wait_for_new_run(settings, seen, trigger="schedule", timeout=90)
            finished = wait_for_run(settings, run.run_id)
    finally:
        stop(beat)
    assert finished.trigger == "schedule"
    assert finished.status in {"skipped", "promoted", "rejected"}


def _wait_for_new_run(
    settings: Settings, seen: set[uuid.UUID], *, trigger: str, timeout: float
) -> registry.Run:
    deadline = time.monotonic() + timeout
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            for run in registry.list_runs(conn, limit=10):
                if run.run_id not in seen and run.trigger == trigger:
                    return run
            time.sleep(0.5)
    raise TimeoutError(f"no {trigger} run within {timeout} s")


def _kill_tree(worker: Started) -> None:
    """SIGKILL the worker and its pool processes at once, as an OOM killer or a crash would."""
    import psutil

    parent = psutil.Process(worker.process.pid)
    for process in [*parent.children(recursive=True), parent]:
        process.send_signal(signal.SIGKILL)
