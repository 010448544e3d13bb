"""POST /v1/events: validate a batch, store the valid events, say what happened to each."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from online.auth import require_scope
from online.body import array_body_schema, read_limited_body
from online.deps import EventRulesDep, EventWriterDep, PoolDep, SettingsDep
from online.errors import NothingValid, PayloadTooLarge, json_response
from online.recent import RecentEvents
from shared.event_store import EventWriter, WriteResult
from shared.events import Event, event_json_schema, validate_batch

MAX_BATCH_DOC = 10_000
router = APIRouter(prefix="/v1", tags=["events"], dependencies=[Depends(require_scope("events"))])


class RejectedEvent(BaseModel):
    index: int
    error: str


class IngestAnswer(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[RejectedEvent]


@router.post(
    "/events",
    summary="Record shopper events (up to 10,000 per call)",
    openapi_extra={"requestBody": array_body_schema(event_json_schema(), max_items=MAX_BATCH_DOC)},
    responses={
        200: {"model": IngestAnswer, "description": "Valid events stored; invalid ones listed"},
        400: {"description": "The body is not a JSON array"},
        413: {"description": "Too many events or bytes"},
        422: {"description": "No valid event in the batch"},
    },
)
async def post_events(
    request: Request,
    settings: SettingsDep,
    pool: PoolDep,
    writer: EventWriterDep,
    rules: EventRulesDep,
) -> Response:
    body = await read_limited_body(request, settings.max_body_bytes)
    batch = validate_batch(body, rules=rules)
    total = len(batch.valid) + len(batch.rejected)
    if total > settings.max_batch_events:
        raise PayloadTooLarge(f"{total} events; at most {settings.max_batch_events} per call")
    rejected = [{"index": r.index, "error": r.error} for r in batch.rejected]
    if not batch.valid:
        raise NothingValid({"accepted": 0, "duplicates": 0, "rejected": rejected})
    recent: RecentEvents | None = request.app.state.recent_events
    result = await run_in_threadpool(_store, pool, writer, batch.valid, recent)
    return json_response(
        {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": rejected}
    )


def _store(
    pool: ConnectionPool, writer: EventWriter, events: list[Event], recent: RecentEvents | None
) -> WriteResult:
    """Commit the events, then hand the new ones to real-time fold-in (after the commit, so a
    recommendation never folds in an event the database does not have)."""
    with pool.connection() as conn:
        result = writer.write(conn, events)
    if recent is not None:
        recent.append(result.stored)
    return result
