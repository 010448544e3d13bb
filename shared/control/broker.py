"""The Celery client of operators: the broker's configuration and an app that registers no tasks.

Both sides build their Celery app from `celery_config`: the worker (offline/celery_app.py)
adds its tasks and fork handlers, while the CLI and the admin API only send tasks by name
(`shared.control.names`) through `broker_client`. Importing this module loads Celery: the API
imports it only when an operator first queues something.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from shared.control.names import DEFAULT_QUEUE, QUEUES, TRAINING_QUEUE
from shared.redis_url import celery_redis_url, redis_py_url
from shared.settings import Settings

REDBEAT_SCHEDULER = "redbeat.RedBeatScheduler"


class RecsysCelery(Celery):
    """A Celery app that carries the settings it was built from (for signals and tasks)."""

    settings: Settings


def broker_client(settings: Settings) -> RecsysCelery:
    """An app that only sends tasks (RECSYS_REDIS_URL must be resolved by now)."""
    app = RecsysCelery("recsys", set_as_current=False)
    app.settings = settings
    app.conf.update(celery_config(settings))
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
