"""The retrain and tune schedules in Redis (RedBeat): operators set, pause and resume them.

Two entries at most: the retrain (e.g. daily) and the hyper-parameter search (e.g. weekly,
offline/tuning.py); a tune that finds better settings saves them, and every later retrain
uses them, so "a weekly tune, a daily refit with the best settings" is these two entries.

A cron expression in UTC becomes a Celery crontab. In another time zone it becomes an RRULE
anchored in that zone (RedBeat stores crontabs without a zone, but keeps a zoned dtstart), so
"03:00 Europe/Berlin" stays 03:00 local across daylight-saving changes.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from celery import Celery
from celery.schedules import crontab
from redbeat.schedulers import RedBeatSchedulerEntry
from redbeat.schedules import rrule

from shared.control.names import RETRAIN_SCHEDULED, SWEEP_RUNS, TRAINING_QUEUE, TUNE
from shared.control.results import ScheduleError, ScheduleInfo, TuneScheduleInfo
from shared.redis_url import redis_py_url

RETRAIN_ENTRY = "recsys-retrain"
TUNE_ENTRY = "recsys-tune"
ENTRIES = {"retrain": RETRAIN_ENTRY, "tune": TUNE_ENTRY}
SWEEP_ENTRY = "recsys-sweep-runs"
SWEEP_EVERY_SECONDS = 300


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
        # By name: crontab's positional order (minute, hour, day_of_week, ...) is not cron's.
        minute, hour, day_of_month, month, day_of_week = fields
        cron = crontab(
            minute=minute,
            hour=hour,
            day_of_week=day_of_week,
            day_of_month=day_of_month,
            month_of_year=month,
        )
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


def set_tune_schedule(
    app: Celery,
    *,
    cron: str,
    timezone: str = "UTC",
    max_trials: int | None = None,
    max_cost: float | None = None,
    metric: str = "ndcg",
    algorithm: str = "als",
    apply: bool = True,
) -> TuneScheduleInfo:
    """Create or replace the tune entry (enabled). The caller checks the budget and the
    algorithm first (offline.tuning_space), so a bad one fails now, not at 3 a.m."""
    schedule = parse_cron(cron, timezone)
    options: dict[str, Any] = {
        "max_trials": max_trials,
        "max_cost": max_cost,
        "metric": metric,
        "algorithm": algorithm,
        "apply": apply,
        "trigger": "schedule",
    }
    RedBeatSchedulerEntry(
        TUNE_ENTRY, TUNE, schedule, kwargs=options, options={"queue": TRAINING_QUEUE}, app=app
    ).save()
    _client(app).hset(_meta_key(app, TUNE_ENTRY), mapping={"cron": cron, "timezone": timezone})
    info = tune_schedule(app)
    assert info is not None
    return info


def tune_schedule(app: Celery) -> TuneScheduleInfo | None:
    """The tune entry with its budget, or None when none is set."""
    entry = _entry(app, TUNE_ENTRY)
    info = _info(app, TUNE_ENTRY)
    if entry is None or info is None:
        return None
    return TuneScheduleInfo(**asdict(info), options=dict(entry.kwargs))


def list_schedules(app: Celery) -> dict[str, ScheduleInfo]:
    """Every entry that is set, by kind ("retrain", "tune")."""
    found = {"retrain": retrain_schedule(app), "tune": tune_schedule(app)}
    return {kind: info for kind, info in found.items() if info is not None}


def retrain_schedule(app: Celery) -> ScheduleInfo | None:
    return _info(app, RETRAIN_ENTRY)


def _info(app: Celery, name: str) -> ScheduleInfo | None:
    entry = _entry(app, name)
    if entry is None:
        return None
    raw: dict[bytes, bytes] = _client(app).hgetall(_meta_key(app, name))  # type: ignore[assignment]
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


def set_enabled(app: Celery, enabled: bool, kind: str = "retrain") -> ScheduleInfo:
    """Pause (False) or resume (True) the retrain (or tune) entry without forgetting it."""
    entry = _entry(app, ENTRIES[kind])
    if entry is None:
        raise ScheduleError(f"no {kind} schedule is set; use `recsys schedule set --cron ...`")
    entry.enabled = enabled
    entry.save()
    info = tune_schedule(app) if kind == "tune" else retrain_schedule(app)
    assert info is not None
    return info


def _entry(app: Celery, name: str = RETRAIN_ENTRY) -> RedBeatSchedulerEntry | None:
    key = f"{app.conf.redbeat_key_prefix}{name}"
    try:
        return RedBeatSchedulerEntry.from_key(key, app=app)
    except KeyError:
        return None


def _next_run(entry: RedBeatSchedulerEntry) -> datetime:
    remaining = entry.schedule.remaining_estimate(entry.last_run_at)
    return datetime.now(UTC) + remaining


def _client(app: Celery) -> redis.Redis:
    return redis.Redis.from_url(redis_py_url(app.conf.redbeat_redis_url))


def _meta_key(app: Celery, name: str = RETRAIN_ENTRY) -> str:
    return f"{app.conf.redbeat_key_prefix}{name}:recsys-meta"
