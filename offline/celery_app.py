"""The Celery app of the offline path: Redis broker and results, two queues, RedBeat.

Fork trap: once a process has run a multi-threaded implicit/BLAS/OpenMP call, a child forked
from it can hang on a lock copied while held. The prefork pool forks its processes when the
worker starts (and again when it replaces one), so the worker's main process must never train,
run threaded numpy/scipy math or open a database pool: all of that happens in pool processes,
each of which opens its own database pool after the fork (`worker_process_init`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, current_app, signals
from kombu import Exchange, Queue

from offline import worker_db
from offline.tasks import register_tasks
from shared.redis_url import celery_redis_url, redis_py_url
from shared.settings import Settings

DEFAULT_QUEUE = "default"
TRAINING_QUEUE = "training"
QUEUES = (TRAINING_QUEUE, DEFAULT_QUEUE)
REDBEAT_SCHEDULER = "redbeat.RedBeatScheduler"


class RecsysCelery(Celery):
    """A Celery app that carries the settings it was built from, for its signal handlers."""

    settings: Settings


def create_celery_app(settings: Settings) -> Celery:
    """One app per process, built from settings (RECSYS_REDIS_URL must be resolved by now)."""
    app = RecsysCelery("recsys", set_as_current=False)
    app.settings = settings
    app.conf.update(celery_config(settings))
    register_tasks(app)
    _connect_worker_signals()
    return app


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, one task prefetched, limits from settings."""
    url = settings.require_redis_url()
    return {
        "broker_url": celery_redis_url(url),
        "result_backend": celery_redis_url(url),
        "broker_connection_retry_on_startup": True,
        # Redis redelivers an unacked task after the visibility timeout: it must outlast the
        # longest task, or a long retrain would start a second time elsewhere.
        "broker_transport_options": _transport_options(settings),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_expires": settings.task_result_expires_seconds,
        "timezone": "UTC",
        "enable_utc": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "worker_prefetch_multiplier": 1,
        # When the broker connection drops, unacked tasks go back to the queue: cancel them
        # rather than let them run on beside their redelivered copy.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_soft_time_limit": settings.task_soft_time_limit_seconds,
        "task_time_limit": settings.task_time_limit_seconds,
        **_routing_config(),
        **_beat_config(settings, url),
    }


def _transport_options(settings: Settings) -> dict[str, Any]:
    return {
        "visibility_timeout": int(settings.task_time_limit_seconds) + 300,
        "global_keyprefix": settings.redis_key_prefix,
    }


def _routing_config() -> dict[str, Any]:
    return {
        # Each queue on its own exchange and key: queues left to Celery's defaults share one
        # binding, and then every task sent to either queue lands in both.
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        "task_default_queue": DEFAULT_QUEUE,
        "task_create_missing_queues": False,
        "task_routes": {"offline.tasks.retrain*": {"queue": TRAINING_QUEUE}},
    }


def _beat_config(settings: Settings, url: str) -> dict[str, Any]:
    # The schedule lives in Redis (RedBeat), so operators change it while beat runs.
    return {
        "beat_scheduler": REDBEAT_SCHEDULER,
        "beat_max_loop_interval": settings.beat_max_loop_interval,
        "redbeat_redis_url": redis_py_url(url),
        "redbeat_redis_options": {"retry_period": 60},
        "redbeat_key_prefix": f"{settings.redis_key_prefix}redbeat:",
    }


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
