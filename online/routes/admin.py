"""/v1/admin: what operators do with `recsys train|runs|models|schedule`, over HTTP.

Retrain, watch runs, promote or roll back model versions, and edit the retrain schedule. The
run row in PostgreSQL is the truth about a retrain; the Celery message only wakes a worker.

Authentication: the admin scope check goes on `router` below, once, as
`APIRouter(..., dependencies=[<admin scope dependency>])`; every route here inherits it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Concatenate, ParamSpec, TypeVar

import psycopg
from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import Response
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from online.auth import require_scope
from online.deps import CeleryDep, PoolDep, SettingsDep
from online.errors import NotFound, json_response
from shared import registry
from shared.control.results import ScheduleInfo
from shared.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

    from shared.control.retrain import Trigger

P = ParamSpec("P")
T = TypeVar("T")
MOVED_BY = "api"
router = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_scope("admin"))]
)

Limit = Annotated[int, Query(ge=1, le=1000, description="How many, newest first.")]
VersionPath = Annotated[str, Path(min_length=1, max_length=200)]


class ErrorAnswer(BaseModel):
    error: str
    detail: Any = None


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = Field(default=False, description="Retrain even if no event arrived.")


class RetrainAnswer(BaseModel):
    run_id: uuid.UUID
    status: str
    created: bool


class RunList(BaseModel):
    runs: list[registry.Run]


class PointerAnswer(BaseModel):
    live: str | None = Field(description="The version serving now (None before any promotion).")
    previous: str | None = Field(description="Where a rollback would go.")


class VersionList(PointerAnswer):
    versions: list[registry.ModelVersion]


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str = Field(examples=["0 3 * * *"], description="minute hour day month weekday")
    timezone: str = Field(default="UTC", examples=["Europe/Berlin"], description="IANA zone")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorAnswer} for code in codes}


# --- retraining -----------------------------------------------------------------------------


@router.post(
    "/retrain",
    status_code=202,
    summary="Queue a retrain (one at a time)",
    responses={
        202: {"model": RetrainAnswer, "description": "Queued for a worker"},
        409: {"model": RetrainAnswer, "description": "One is already queued or running"},
        **_errors(422, 503),
    },
)
async def post_retrain(
    settings: SettingsDep,
    pool: PoolDep,
    celery: CeleryDep,
    body: Annotated[RetrainRequest | None, Body()] = None,
) -> Response:
    force = body.force if body else False
    trigger = await run_in_threadpool(_queue_retrain, pool, settings, celery, force=force)
    answer = {"run_id": trigger.run_id, "status": trigger.status, "created": trigger.created}
    return json_response(answer, 202 if trigger.created else 409)


def _queue_retrain(
    pool: ConnectionPool, settings: Settings, celery: Celery, *, force: bool
) -> Trigger:
    # Imported here: the trigger's snapshot pulls in the retrain spec, which an API process
    # should load only if an operator ever retrains through it.
    from shared.control.retrain import queue_retrain

    with pool.connection() as conn:
        return queue_retrain(conn, settings, celery, trigger="api", force=force)


@router.get(
    "/runs", summary="The latest retrain runs", responses={200: {"model": RunList}, **_errors(422)}
)
async def get_runs(pool: PoolDep, limit: Limit = 20) -> Response:
    runs = await run_in_threadpool(_read, pool, registry.list_runs, limit=limit)
    return json_response({"runs": runs})


@router.get(
    "/runs/{run_id}",
    summary="One run with its phases, costs and metrics",
    responses={200: {"model": registry.Run}, **_errors(404, 422)},
)
async def get_run(pool: PoolDep, run_id: uuid.UUID) -> Response:
    run = await run_in_threadpool(_read, pool, registry.get_run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    return json_response(run)


# --- model versions -------------------------------------------------------------------------


@router.get(
    "/models",
    summary="Model versions, newest first, and which one is live",
    responses={200: {"model": VersionList}, **_errors(422)},
)
async def get_models(pool: PoolDep, limit: Limit = 20) -> Response:
    return json_response(await run_in_threadpool(_versions, pool, limit))


def _versions(pool: ConnectionPool, limit: int) -> dict[str, Any]:
    with pool.connection() as conn:
        versions = registry.list_versions(conn, limit=limit)
        return {**_pointer(conn), "versions": versions}


@router.get(
    "/models/{version}",
    summary="One version (`promoted` says whether it is live)",
    responses={200: {"model": registry.ModelVersion}, **_errors(404)},
)
async def get_model(pool: PoolDep, version: VersionPath) -> Response:
    found = await run_in_threadpool(_read, pool, registry.get_version, version)
    if found is None:
        raise NotFound(f"no model version {version!r}")
    return json_response(found)


@router.post(
    "/models/rollback",
    summary="Point back at the version live before the current one",
    responses={200: {"model": PointerAnswer}, **_errors(409)},
)
async def post_rollback(pool: PoolDep) -> Response:
    return json_response(await run_in_threadpool(_rollback, pool))


def _rollback(pool: ConnectionPool) -> dict[str, str | None]:
    with pool.connection() as conn:
        registry.rollback(conn, moved_by=MOVED_BY)
        return _pointer(conn)


@router.post(
    "/models/{version}/promote",
    summary="Make a kept version live (API processes swap to it within seconds)",
    responses={200: {"model": PointerAnswer}, **_errors(404, 409)},
)
async def post_promote(pool: PoolDep, version: VersionPath) -> Response:
    return json_response(await run_in_threadpool(_promote, pool, version))


def _promote(pool: ConnectionPool, version: str) -> dict[str, str | None]:
    with pool.connection() as conn:
        if registry.get_version(conn, version) is None:
            raise NotFound(f"no model version {version!r}")
        registry.promote_version(conn, version, moved_by=MOVED_BY)  # pruned files: 409
        return _pointer(conn)


def _pointer(conn: psycopg.Connection) -> dict[str, str | None]:
    live, previous = registry.pointer(conn) or (None, None)
    return {"live": live, "previous": previous}


def _read(
    pool: ConnectionPool,
    query: Callable[Concatenate[psycopg.Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Run one registry read on a pooled connection (in a worker thread)."""
    with pool.connection() as conn:
        return query(conn, *args, **kwargs)


# --- the retrain schedule (RedBeat, in Redis) -----------------------------------------------


@router.get(
    "/schedule",
    summary="The retrain schedule and when it fires next",
    responses={200: {"model": ScheduleInfo}, **_errors(404, 503)},
)
async def get_schedule(celery: CeleryDep) -> Response:
    return json_response(await run_in_threadpool(_existing_schedule, celery))


@router.put(
    "/schedule",
    summary="Retrain on a cron schedule (enabled; replaces any previous one)",
    responses={200: {"model": ScheduleInfo}, **_errors(422, 503)},
)
async def put_schedule(celery: CeleryDep, body: ScheduleRequest) -> Response:
    from shared.control.schedule import set_retrain_schedule

    info = await run_in_threadpool(
        set_retrain_schedule, celery, cron=body.cron, timezone=body.timezone
    )
    return json_response(info)


@router.post(
    "/schedule/pause",
    summary="Stop scheduled retrains (the schedule is kept)",
    responses={200: {"model": ScheduleInfo}, **_errors(404, 503)},
)
async def pause_schedule(celery: CeleryDep) -> Response:
    return json_response(await run_in_threadpool(_set_enabled, celery, False))


@router.post(
    "/schedule/resume",
    summary="Resume scheduled retrains",
    responses={200: {"model": ScheduleInfo}, **_errors(404, 503)},
)
async def resume_schedule(celery: CeleryDep) -> Response:
    return json_response(await run_in_threadpool(_set_enabled, celery, True))


def _existing_schedule(celery: Celery) -> ScheduleInfo:
    from shared.control.schedule import retrain_schedule

    info = retrain_schedule(celery)
    if info is None:
        raise NotFound("no retrain schedule is set; PUT /v1/admin/schedule sets one")
    return info


def _set_enabled(celery: Celery, enabled: bool) -> ScheduleInfo:
    from shared.control.schedule import set_enabled

    _existing_schedule(celery)  # a missing schedule is a 404 here, not a bad request
    return set_enabled(celery, enabled)
