"""PUT /v1/items: insert or replace catalogue items."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from online.auth import require_scope
from online.body import array_body_schema, read_limited_body
from online.deps import PoolDep, SettingsDep
from online.errors import NothingValid, PayloadTooLarge, json_response
from online.routes.events import MAX_BATCH_DOC, RejectedEvent
from shared.catalog import ItemIn, item_json_schema, upsert_items, validate_items

router = APIRouter(prefix="/v1", tags=["catalog"], dependencies=[Depends(require_scope("events"))])


class ItemsAnswer(BaseModel):
    upserted: int
    rejected: list[RejectedEvent]


@router.put(
    "/items",
    summary="Insert or replace catalogue items (up to 10,000 per call)",
    openapi_extra={"requestBody": array_body_schema(item_json_schema(), max_items=MAX_BATCH_DOC)},
    responses={
        200: {"model": ItemsAnswer, "description": "Valid items stored; invalid ones listed"},
        400: {"description": "The body is not a JSON array"},
        413: {"description": "Too many items or bytes"},
        422: {"description": "No valid item in the batch"},
    },
)
async def put_items(request: Request, settings: SettingsDep, pool: PoolDep) -> Response:
    body = await read_limited_body(request, settings.max_body_bytes)
    valid, rejections = validate_items(body)
    total = len(valid) + len(rejections)
    if total > settings.max_batch_events:
        raise PayloadTooLarge(f"{total} items; at most {settings.max_batch_events} per call")
    rejected = [{"index": r.index, "error": r.error} for r in rejections]
    if not valid:
        raise NothingValid({"upserted": 0, "rejected": rejected})
    upserted = await run_in_threadpool(_store, pool, valid)
    return json_response({"upserted": upserted, "rejected": rejected})


def _store(pool: ConnectionPool, items: list[ItemIn]) -> int:
    with pool.connection() as conn:
        return upsert_items(conn, items)
