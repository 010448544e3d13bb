"""A fixed 10-item answer for the serving benchmark (bench/serve.py): our stack, no work.

Mounted only when RECSYS_BENCH_ROUTES is true (online/main.py), right after the
recommendations router, so that it pays the same routing walk as a recommendation.
`GET /v1/bench/fixed` goes through everything the app puts around a real route (middleware,
exception handlers, routing, FastAPI's request handling, our JSON response) but takes no API
key and touches neither the model nor Redis nor the database. The benchmark compares it with
a raw Starlette route sending the same bytes (bench/starlette_app.py), and a recommendation
with it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from online.errors import json_response

FIXED_PATH = "/v1/bench/fixed"
FIXED_ANSWER: dict[str, Any] = {
    "model_version": "bench",
    "user_id": "u00000001",
    "source": "model",
    "items": [{"item_id": f"i{i:07d}", "score": round(1.0 - i / 16, 4)} for i in range(10)],
    "filled_from_popular": 0,
}

router = APIRouter(tags=["bench"], include_in_schema=False)


@router.get(FIXED_PATH)
async def fixed() -> Response:
    """The same 10 items every time, serialised per request like a real answer."""
    return json_response(FIXED_ANSWER)
