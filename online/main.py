"""The HTTP API: create_app(settings) wires routes, error handlers and per-process state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from online.errors import install_error_handlers
from online.routes import admin, events, health, items
from shared.db import create_pool
from shared.event_store import EventWriter
from shared.events import EventRules
from shared.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """One app per process; the database pool opens in the lifespan (after any fork)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = create_pool(
            settings.require_database_url(),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
        )
        pool.open(wait=False)
        app.state.pool = pool
        app.state.celery = None  # built on the first admin call that needs it (online.deps)
        try:
            yield
        finally:
            if app.state.celery is not None:
                app.state.celery.close()
            pool.close()

    app = FastAPI(
        title="recsys",
        summary="Recommendations for online shops, with their cost on the bill.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.event_writer = EventWriter()
    app.state.event_rules = EventRules.from_settings(settings)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(events.router)
    app.include_router(items.router)
    app.include_router(admin.router)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` worker processes: settings come from RECSYS_*."""
    return create_app(Settings())
