"""Annotated aliases for what request handlers need; everything lives on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from shared.event_store import EventWriter
from shared.events import EventRules
from shared.settings import Settings


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


SettingsDep = Annotated[Settings, Depends(_settings)]
PoolDep = Annotated[ConnectionPool, Depends(_pool)]
EventWriterDep = Annotated[EventWriter, Depends(_writer)]
EventRulesDep = Annotated[EventRules, Depends(_rules)]
