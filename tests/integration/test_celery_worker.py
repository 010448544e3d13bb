"""A real `recsys worker` and `recsys beat` on the real Redis and PostgreSQL.

Every run writes under a Redis key prefix of its own, so runs sharing a Redis never meet.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.schedules import schedule
from redbeat import RedBeatSchedulerEntry

from offline.celery_app import create_celery_app
from shared.control.names import PING
from shared.embedded import embedded_redis_url, stop_embedded_redis
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
    wait_for_log,
    wait_until_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def key_prefix(redis_url: str) -> Iterator[str]:
    prefix = unique_key_prefix()
    yield prefix
    delete_keys(redis_url, prefix)


@pytest.fixture(scope="module")
def env(
    redis_url: str, database_url: str, key_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    data_dir = tmp_path_factory.mktemp("celery") / "var"
    return celery_env(
        redis_url=redis_url,
        database_url=database_url,
        key_prefix=key_prefix,
        data_dir=data_dir,
        extra={"RECSYS_BEAT_MAX_LOOP_INTERVAL": "0.5"},
    )


@pytest.fixture(scope="module")
def client(redis_url: str, database_url: str, key_prefix: str) -> Iterator[Celery]:
    """The sending side: an app built from the same settings the worker reads."""
    settings = Settings(redis_url=redis_url, database_url=database_url, redis_key_prefix=key_prefix)
    app = create_celery_app(settings)
    yield app
    app.close()


@pytest.fixture(scope="module")
def worker(
    client: Celery, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Started]:
    log_file = tmp_path_factory.mktemp("logs") / "worker.log"
    with running_worker(client, env, log_file) as started:
        yield started


def test_ping_goes_through_the_broker_to_a_pool_process(client: Celery, worker: Started) -> None:
    result = client.send_task(PING)
    answer = result.get(timeout=20)
    result.forget()
    assert answer["hostname"] == socket.gethostname()
    assert answer["pid"] not in (os.getpid(), worker.process.pid)
    wait_for_log(worker, f"Task {PING}[{result.id}] succeeded", timeout=5)


def test_pool_process_opened_its_own_database_pool_after_fork(
    client: Celery, worker: Started
) -> None:
    result = client.send_task(PING)
    answer = result.get(timeout=20)
    result.forget()
    assert answer["database"] == {"pool_pid": answer["pid"], "select_one": 1}


def test_celery_cli_finds_the_app_through_worker_main(env: dict[str, str], worker: Started) -> None:
    """The worker healthcheck of docker-compose.yml: `celery -A offline.worker_main` pings."""
    celery = str(Path(sys.executable).parent / "celery")
    command = [
        celery,
        "-A",
        "offline.worker_main",
        "inspect",
        "ping",
        "--destination",
        str(worker.node_name),
        "--timeout",
        "5",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pong" in done.stdout


def test_beat_sends_an_entry_added_to_redis_while_it_runs(
    client: Celery, env: dict[str, str], tmp_path: Path
) -> None:
    beat = start_recsys(["beat", "--loglevel", "info"], env, tmp_path / "beat.log")
    try:
        wait_for_log(beat, "beat: Acquired lock")
        entry = RedBeatSchedulerEntry(
            "test-ping",
            PING,
            schedule(1),
            app=client,
            options={"ignore_result": True, "expires": 30},
        )
        entry.save()
        _wait_until_sent(client, entry.key, beat=beat)
        entry.delete()
    finally:
        assert stop(beat) == 0, beat.log()


def test_worker_shuts_down_cleanly_on_sigterm(
    client: Celery, env: dict[str, str], tmp_path: Path
) -> None:
    worker = start_worker(env, tmp_path / "worker.log")
    wait_until_ready(client, worker)
    assert stop(worker) == 0, worker.log()
    assert "Warm shutdown" in worker.log()


def test_embedded_redis_outlives_the_process_that_started_it(tmp_path: Path) -> None:
    """The newcomer's default: `recsys worker` and later commands share one redis-server."""
    data_dir = tmp_path / "var"
    script = (
        "import pathlib, sys; from shared.embedded import embedded_redis_url; "
        "print(embedded_redis_url(pathlib.Path(sys.argv[1])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    url = done.stdout.strip()
    try:
        assert embedded_redis_url(data_dir) == url
        with redis.Redis.from_url(url) as client:
            assert client.ping()
    finally:
        assert stop_embedded_redis(data_dir)
    assert not stop_embedded_redis(data_dir)


@pytest.mark.parametrize(
    ("url", "for_celery", "for_redis_py"),
    [
        ("redis://redis:6379/0", "redis://redis:6379/0", "redis://redis:6379/0"),
        ("unix:///v/redis.sock", "redis+socket:///v/redis.sock", "unix:///v/redis.sock"),
        ("redis+socket:///v/redis.sock", "redis+socket:///v/redis.sock", "unix:///v/redis.sock"),
    ],
)
def test_each_client_gets_its_spelling_of_a_redis_url(
    url: str, for_celery: str, for_redis_py: str
) -> None:
    app = create_celery_app(Settings(redis_url=url))
    assert (app.conf.broker_url, app.conf.result_backend) == (for_celery, for_celery)
    assert app.conf.redbeat_redis_url == for_redis_py


def _wait_until_sent(app: Celery, key: str, *, beat: Started, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while RedBeatSchedulerEntry.from_key(key, app=app).total_run_count < 1:
        assert time.monotonic() < deadline, f"beat never sent {key}:\n{beat.log()}"
        time.sleep(0.1)
