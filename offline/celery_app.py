"""The worker's Celery app: the shared broker configuration with the tasks registered.

Fork trap: once a process has run a multi-threaded implicit/BLAS/OpenMP call, a child forked
from it can hang on a lock copied while held. The prefork pool forks its processes when the
worker starts (and again when it replaces one), so the worker's main process must never train,
run threaded numpy/scipy math or open a database pool: all of that happens in pool processes,
each of which opens its own database pool after the fork (`worker_process_init`).
"""

from __future__ import annotations

from typing import Any

from celery import current_app, signals

from offline import worker_db
from offline.tasks import register_tasks
from shared.control.broker import RecsysCelery, broker_client
from shared.settings import Settings


def create_celery_app(settings: Settings) -> RecsysCelery:
    """The worker's app: the operators' broker client plus the tasks and the fork handlers."""
    app = broker_client(settings)
    register_tasks(app)
    _connect_worker_signals()
    return app


def _connect_worker_signals() -> None:
    # Idempotent: dispatch_uid keeps one connection however many apps a process builds.
    signals.worker_process_init.connect(
        _open_pool_after_fork, weak=False, dispatch_uid="recsys-open-worker-pool"
    )
    signals.worker_process_shutdown.connect(
        _close_pool_at_exit, weak=False, dispatch_uid="recsys-close-worker-pool"
    )


def _open_pool_after_fork(**_: Any) -> None:
    app = current_app._get_current_object()
    if isinstance(app, RecsysCelery):
        worker_db.open_worker_pool(app.settings)


def _close_pool_at_exit(**_: Any) -> None:
    worker_db.close_worker_pool()
