"""What operator actions answer and raise, in a module that loads neither Celery nor Redis,
so the API can map and describe them without importing the broker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


class ScheduleError(ValueError):
    """A bad cron expression or time zone, or no schedule to pause/resume."""


class BrokerUnavailable(RuntimeError):
    """Redis (Celery's broker, RedBeat's store) is unreachable or not configured here."""


@dataclass(frozen=True)
class ScheduleInfo:
    cron: str
    timezone: str
    enabled: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    total_run_count: int


@dataclass(frozen=True)
class TuneScheduleInfo(ScheduleInfo):
    """The tune entry also carries the search's budget and options (the task's kwargs)."""

    options: dict[str, Any]
