"""The `-A` target for Celery's own CLI: `celery -A offline.worker_main inspect ping`.

`app` is built on first access (PEP 562 module `__getattr__`), not at import, so importing
this module reads no settings. `recsys worker` and `recsys beat` do not need this module.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery


@cache
def app_from_env() -> Celery:
    """The app for this process, from RECSYS_* variables (RECSYS_REDIS_URL must be set)."""
    from offline.celery_app import create_celery_app
    from shared.settings import Settings

    return create_celery_app(Settings())


def __getattr__(name: str) -> Any:
    if name == "app":
        return app_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
