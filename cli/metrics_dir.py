"""The directory where `recsys serve`'s worker processes keep their Prometheus values.

prometheus_client's multiprocess mode: each worker writes its metrics to mmapped files in
PROMETHEUS_MULTIPROC_DIR, and a scrape sums them (online/prometheus.py). The variable must
be set before a worker imports prometheus_client, and the directory must start empty: files
left by an earlier server would be summed into this one's counters. Deliberately free of
prometheus_client imports, so the CLI process never loads it before the variable is set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """Export an empty directory for this server's workers and return it.

    An operator's PROMETHEUS_MULTIPROC_DIR is kept and emptied of metric files; otherwise
    <data_dir>/prometheus/<this pid>, after removing those of servers no longer running
    (servers sharing a data dir must not share, nor wipe, each other's files).
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        root = data_dir / "prometheus"
        _remove_dead_servers(root)
        path = root / str(os.getpid())
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path.resolve())
    return path


def _remove_dead_servers(root: Path) -> None:
    """Remove the directories of servers (named by pid) that are no longer running."""
    if not root.is_dir():
        return
    for child in root.iterdir():
        if child.is_dir() and child.name.isdigit() and not psutil.pid_exists(int(child.name)):
            shutil.rmtree(child, ignore_errors=True)
