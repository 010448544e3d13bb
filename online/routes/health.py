"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from online.deps import PoolDep
from online.errors import json_response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="The database is reachable")
async def readyz(pool: PoolDep) -> Response:
    database_ok = await run_in_threadpool(_database_answers, pool)
    checks = {"database": "ok" if database_ok else "unreachable"}
    status = 200 if database_ok else 503
    return json_response(
        {"status": "ready" if database_ok else "not_ready", "checks": checks}, status
    )


def _database_answers(pool: ConnectionPool) -> bool:
    try:
        with pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False
