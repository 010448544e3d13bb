"""Annotated aliases for what request handlers need; everything lives on app.state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from shared.control.results import BrokerUnavailable
from shared.event_store import EventWriter
from shared.events import EventRules
from shared.settings import Settings

if TYPE_CHECKING:
    from celery import Celery


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


def _writer(request: Request) -> EventWriter:
    writer: EventWriter = request.app.state.event_writer
    return writer


def _rules(request: Request) -> EventRules:
    rules: EventRules = request.app.state.event_rules
    return rules


async def _celery(request: Request) -> Celery:
    """The process's broker client, built on first use: only admin calls need the broker, so
    Celery is imported here, not when the API starts.

    Async on purpose: it runs on the event loop, so two first calls cannot build two apps.
    """
    from shared.control.broker import broker_client

    state = request.app.state
    if getattr(state, "celery", None) is None:
        settings: Settings = state.settings
        if not settings.redis_url:
            raise BrokerUnavailable("RECSYS_REDIS_URL is not set for this API process")
        state.celery = broker_client(settings)
    celery: Celery = state.celery
    return celery


SettingsDep = Annotated[Settings, Depends(_settings)]
PoolDep = Annotated[ConnectionPool, Depends(_pool)]
EventWriterDep = Annotated[EventWriter, Depends(_writer)]
EventRulesDep = Annotated[EventRules, Depends(_rules)]
CeleryDep = Annotated["Celery", Depends(_celery)]
