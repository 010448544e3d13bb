"""The HTTP API: create_app(settings) wires routes, error handlers and per-process state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from online.auth import KeyCache
from online.errors import install_error_handlers
from online.instrumentation import InstrumentationMiddleware
from online.live_model import LiveModel
from online.metering import ServingMeter
from online.ratelimit import KeyRateLimiter
from online.recent import RecentEvents
from online.reloader import Reloader
from online.routes import admin, bare, events, health, items, metrics, recommendations
from shared.db import create_pool
from shared.event_store import EventWriter
from shared.events import EventRules
from shared.redis_url import redis_py_url
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
        app.state.recent_events = _recent_events(settings)
        await meter.start(
            app.state.live_model, app.state.rate_limiter.counters, app.state.recent_events
        )
        reloader = Reloader(
            settings.require_database_url(),
            app.state.live_model,
            poll_seconds=settings.model_poll_seconds,
        )
        await run_in_threadpool(reloader.check_now)
        reloader.start()
        try:
            yield
        finally:
            reloader.stop()
            await meter.stop()  # writes this process's usage, the open window included
            if app.state.celery is not None:
                app.state.celery.close()
            if app.state.recent_events is not None:
                await app.state.recent_events.aclose()
            await app.state.rate_limiter.aclose()
            pool.close()

    app = FastAPI(
        title="recsys",
        summary="Recommendations for online shops, with their cost on the bill.",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry hook asks on every request whether a provider is set up;
        # we export Prometheus metrics (online/prometheus.py) and trace nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.event_writer = EventWriter()
    app.state.event_rules = EventRules.from_settings(settings)
    app.state.key_cache = KeyCache(settings.auth_cache_seconds)
    app.state.rate_limiter = KeyRateLimiter(settings)  # connects to Redis on first use
    app.state.meter = meter = ServingMeter(settings)
    app.state.live_model = LiveModel(observers=[meter])
    if settings.metering:  # off: not a single instruction added to the request path
        app.add_middleware(InstrumentationMiddleware, meter=meter.requests)
    install_error_handlers(app)
    # Routes are matched in this order, router by router: the one called on every page view
    # goes first, so it does not pay for walking the others.
    app.include_router(recommendations.router)
    if settings.bench_routes:  # GET /v1/bench/fixed for bench/serve.py, routed like recs
        app.include_router(bare.router)
    app.include_router(events.router)
    app.include_router(items.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(admin.router)
    return app


def _recent_events(settings: Settings) -> RecentEvents | None:
    """Where shoppers' newest events wait for fold-in; None without Redis (no real time)."""
    if not settings.redis_url:
        return None
    return RecentEvents(
        redis_py_url(settings.redis_url),
        prefix=settings.redis_key_prefix,
        keep=settings.recent_events_per_user,
        ttl_seconds=settings.recent_events_ttl_seconds,
        timeout=settings.rate_limit_redis_timeout_seconds,
        breaker_seconds=settings.rate_limit_breaker_seconds,
    )


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` worker processes: settings come from RECSYS_*."""
    return create_app(Settings())
