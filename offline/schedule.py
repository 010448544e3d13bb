"""The retrain schedule in Redis (RedBeat): operators set, pause and resume it at runtime.

A cron expression in UTC becomes a Celery crontab. In another time zone it becomes an RRULE
anchored in that zone (RedBeat stores crontabs without a zone, but keeps a zoned dtstart), so
"03:00 Europe/Berlin" stays 03:00 local across daylight-saving changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from celery import Celery
from celery.schedules import crontab
from redbeat.schedulers import RedBeatSchedulerEntry
from redbeat.schedules import rrule

from offline.tasks import RETRAIN_SCHEDULED, SWEEP_RUNS
from shared.redis_url import redis_py_url

RETRAIN_ENTRY = "recsys-retrain"
SWEEP_ENTRY = "recsys-sweep-runs"
SWEEP_EVERY_SECONDS = 300


class ScheduleError(ValueError):
    """A bad cron expression or time zone, or no schedule to pause/resume."""


@dataclass(frozen=True)
class ScheduleInfo:
    cron: str
    timezone: str
    enabled: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    total_run_count: int


def parse_cron(expression: str, timezone: str) -> Any:
    """A schedule object RedBeat can store, from 'minute hour day-of-month month day-of-week'."""
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError(f"a cron expression has 5 fields, got {len(fields)}: {expression!r}")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {timezone!r}") from None
    try:
        cron = crontab(*fields)
    except ValueError as exc:
        raise ScheduleError(f"bad cron expression {expression!r}: {exc}") from None
    if timezone == "UTC":
        return cron
    if fields[2] != "*" and fields[4] != "*":
        raise ScheduleError("with --tz, restrict either day of month or day of week, not both")
    return rrule(
        "MINUTELY",
        dtstart=datetime.now(zone).replace(second=0, microsecond=0),
        byminute=sorted(cron.minute),
        byhour=sorted(cron.hour),
        bymonthday=None if fields[2] == "*" else sorted(cron.day_of_month),
        bymonth=None if fields[3] == "*" else sorted(cron.month_of_year),
        # cron counts days of week from Sunday = 0, RRULE from Monday = 0
        byweekday=None if fields[4] == "*" else sorted((d - 1) % 7 for d in cron.day_of_week),
    )


def set_retrain_schedule(app: Celery, *, cron: str, timezone: str = "UTC") -> ScheduleInfo:
    """Create or replace the retrain entry (enabled) and the periodic sweep of dead runs."""
    schedule = parse_cron(cron, timezone)
    RedBeatSchedulerEntry(RETRAIN_ENTRY, RETRAIN_SCHEDULED, schedule, app=app).save()
    RedBeatSchedulerEntry(SWEEP_ENTRY, SWEEP_RUNS, SWEEP_EVERY_SECONDS, app=app).save()
    _client(app).hset(_meta_key(app), mapping={"cron": cron, "timezone": timezone})
    info = retrain_schedule(app)
    assert info is not None
    return info


def retrain_schedule(app: Celery) -> ScheduleInfo | None:
    entry = _entry(app)
    if entry is None:
        return None
    raw: dict[bytes, bytes] = _client(app).hgetall(_meta_key(app))  # type: ignore[assignment]
    meta = {key.decode(): value.decode() for key, value in raw.items()}
    last = entry.last_run_at if entry.total_run_count else None
    return ScheduleInfo(
        cron=meta.get("cron", str(entry.schedule)),
        timezone=meta.get("timezone", "UTC"),
        enabled=entry.enabled,
        next_run_at=_next_run(entry) if entry.enabled else None,
        last_run_at=last,
        total_run_count=entry.total_run_count,
    )


def set_enabled(app: Celery, enabled: bool) -> ScheduleInfo:
    """Pause (False) or resume (True) the retrain entry without forgetting it."""
    entry = _entry(app)
    if entry is None:
        raise ScheduleError("no retrain schedule is set; use `recsys schedule set --cron ...`")
    entry.enabled = enabled
    entry.save()
    info = retrain_schedule(app)
    assert info is not None
    return info


def _entry(app: Celery) -> RedBeatSchedulerEntry | None:
    key = f"{app.conf.redbeat_key_prefix}{RETRAIN_ENTRY}"
    try:
        return RedBeatSchedulerEntry.from_key(key, app=app)
    except KeyError:
        return None


def _next_run(entry: RedBeatSchedulerEntry) -> datetime:
    remaining = entry.schedule.remaining_estimate(entry.last_run_at)
    return datetime.now(UTC) + remaining


def _client(app: Celery) -> redis.Redis:
    return redis.Redis.from_url(redis_py_url(app.conf.redbeat_redis_url))


def _meta_key(app: Celery) -> str:
    return f"{app.conf.redbeat_key_prefix}{RETRAIN_ENTRY}:recsys-meta"
