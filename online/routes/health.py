"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from online.deps import PoolDep
from online.errors import json_response
from online.live_model import LiveModel

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="Database reachable and the promoted model loaded")
async def readyz(request: Request, pool: PoolDep) -> Response:
    """Ready when the database answers and this process serves a model (or none is promoted).

    Before the first promotion there is nothing to load: the API is ready to ingest the
    events the first model will be trained on. A promoted version this process refused
    (corrupt files) leaves it ready on the version it serves, and says so: taking every
    process out of the load balancer would turn a bad artifact into an outage.
    """
    promoted = await run_in_threadpool(_promoted_version, pool)
    live: LiveModel = request.app.state.live_model
    database_ok = promoted is not False
    if not database_ok:
        model = "unknown"
    elif promoted is None:
        model = "none promoted yet"
    elif live.version == promoted:
        model = f"serving {promoted}"
    elif live.refused[str(promoted)]:
        model = f"serving {live.version}; promoted {promoted} was refused (unreadable)"
    else:
        model = f"serving {live.version}; loading {promoted}"
    ready = database_ok and (promoted is None or live.version is not None)
    checks = {"database": "ok" if database_ok else "unreachable", "model": model}
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
    )


def _promoted_version(pool: ConnectionPool) -> str | bool | None:
    """The promoted version, None before the first promotion, False if the database is down."""
    try:
        with pool.connection(timeout=2) as conn:
            row = conn.execute("SELECT version FROM model_pointer").fetchone()
        return row[0] if row else None
    except Exception:
        return False
