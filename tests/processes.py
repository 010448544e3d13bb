"""Real `recsys worker` / `recsys beat` processes for integration and end-to-end tests.

Each helper polls with a deadline and, when a process dies or hangs, fails with its log.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from shared.redis_url import redis_py_url

RECSYS = str(Path(sys.executable).parent / "recsys")


@dataclass
class Started:
    """A child process started by these helpers, with the file its output goes to."""

    process: subprocess.Popen[bytes]
    log_file: Path
    node_name: str | None = None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def celery_env(
    *,
    redis_url: str,
    database_url: str,
    key_prefix: str,
    data_dir: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a worker or beat isolated to one Redis key prefix."""
    return {
        **os.environ,
        "RECSYS_REDIS_URL": redis_url,
        "RECSYS_DATABASE_URL": database_url,
        "RECSYS_REDIS_KEY_PREFIX": key_prefix,
        "RECSYS_DATA_DIR": str(data_dir),
        **(extra or {}),
    }


def unique_key_prefix() -> str:
    """A Redis key prefix no other test run uses (the queues themselves are keys)."""
    return f"recsys-test-{os.getpid()}-{secrets.token_hex(4)}:"


def start_recsys(args: list[str], env: Mapping[str, str], log_file: Path) -> Started:
    """Start `recsys ARGS...` with stdout and stderr going to log_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            [RECSYS, *args], env=dict(env), stdout=log, stderr=subprocess.STDOUT
        )
    return Started(process, log_file)


def start_worker(
    env: Mapping[str, str],
    log_file: Path,
    *,
    concurrency: int = 1,
    queues: str = "training,default",
) -> Started:
    """Start `recsys worker` under a node name of its own (returned on the result)."""
    node_name = f"test-{secrets.token_hex(4)}@{socket.gethostname()}"
    args = [
        "worker",
        "--concurrency",
        str(concurrency),
        "--queues",
        queues,
        "--hostname",
        node_name,
        "--loglevel",
        "info",
    ]
    started = start_recsys(args, env, log_file)
    started.node_name = node_name
    return started


def wait_until_ready(app: Any, worker: Started, *, timeout: float = 20.0) -> None:
    """Return once the worker answers a control ping through the broker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _raise_if_exited(worker)
        if app.control.ping(destination=[worker.node_name], timeout=0.5):
            return
    raise TimeoutError(f"worker not ready within {timeout} s:\n{worker.log()}")


def wait_for_log(started: Started, text: str, *, timeout: float = 20.0) -> None:
    """Return once text appears in the process's output."""
    deadline = time.monotonic() + timeout
    while text not in started.log():
        _raise_if_exited(started)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not logged within {timeout} s:\n{started.log()}")
        time.sleep(0.05)


def stop(started: Started, *, timeout: float = 20.0) -> int:
    """SIGTERM (Celery's warm shutdown), wait, SIGKILL if it overstays; the exit status."""
    if started.process.poll() is None:
        started.process.send_signal(signal.SIGTERM)
    try:
        return started.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        started.process.kill()
        started.process.wait()
        raise TimeoutError(f"no exit within {timeout} s of SIGTERM:\n{started.log()}") from None


@contextmanager
def running_worker(
    app: Any, env: Mapping[str, str], log_file: Path, **options: Any
) -> Iterator[Started]:
    """A ready `recsys worker` for the block, stopped after it."""
    worker = start_worker(env, log_file, **options)
    try:
        wait_until_ready(app, worker)
        yield worker
    finally:
        stop(worker)


def delete_keys(redis_url: str, key_prefix: str) -> None:
    """Remove every key a test run wrote under its prefix."""
    with redis.Redis.from_url(redis_py_url(redis_url)) as client:
        keys = list(client.scan_iter(match=f"{key_prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def _raise_if_exited(started: Started) -> None:
    if started.process.poll() is not None:
        raise RuntimeError(f"exited with {started.process.returncode}:\n{started.log()}")
