"""Start the real `recsys serve` in a child process for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

RECSYS = str(Path(sys.executable).parent / "recsys")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_api(
    database_url: str,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    log_file: Path | None = None,
    ready_path: str = "/healthz",
) -> Iterator[str]:
    """Run `recsys serve` until the block ends; yields its base URL once `ready_path` answers.

    With log_file the server's output goes there (read it when a test fails), rather than to
    a pipe nobody drains while the block runs.
    """
    port = free_port()
    env = {**os.environ, "RECSYS_DATABASE_URL": database_url, **(extra_env or {})}
    command = [RECSYS, "serve", "--port", str(port), "--workers", str(workers)]
    process = _start(command, env, log_file)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(base, process, path=ready_path)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


def _start(
    command: list[str], env: dict[str, str], log_file: Path | None
) -> subprocess.Popen[bytes]:
    if log_file is None:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with open(log_file, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_until_healthy(
    base: str, process: subprocess.Popen[bytes], *, path: str = "/healthz", timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else "(see its log file)"
            raise RuntimeError(f"recsys serve exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{base}{path}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"recsys serve did not answer within {timeout} s")
