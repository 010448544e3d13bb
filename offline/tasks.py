"""Thin Celery tasks: each one call into plain code, registered by `register_tasks(app)`.

Tasks are attached to the app that `create_celery_app(settings)` builds rather than to a
module-level app with `@app.task`: a module-level app would need settings (the broker URL) at
import time, and tests and the CLI each build their app from their own settings. Callers send
tasks by name (`app.send_task(PING)`) and never need to import the task's code. Nothing here
may run threaded math at import: the worker's main process imports this before it forks.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from offline import worker_db

PING = "offline.tasks.ping"


def ping() -> dict[str, Any]:
    """Who answered, when, and whether its database pool works: for readiness checks."""
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "time": datetime.now(UTC).isoformat(),
        "database": worker_db.database_status(),
    }


def register_tasks(app: Celery) -> None:
    """Attach every task to app under its stable name (retrain tasks join here later)."""
    app.task(name=PING, acks_late=False, soft_time_limit=20, time_limit=30)(ping)
