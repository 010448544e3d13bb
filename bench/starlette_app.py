"""The reference for bench/serve.py: one raw Starlette route sending our bare answer's bytes.

    uvicorn bench.starlette_app:app --workers 2 --loop uvloop --http httptools

No middleware, no dependencies, no serialisation per request: the floor of any app on
Starlette under the same uvicorn options as `recsys serve`. It imports nothing of ours (so
its workers stay small); bench/serve.py checks that both endpoints send the same body.
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PATH = "/v1/bench/fixed"
BODY = orjson.dumps(  # the same answer as online/routes/bare.py's FIXED_ANSWER
    {
        "model_version": "bench",
        "user_id": "u00000001",
        "source": "model",
        "items": [{"item_id": f"i{i:07d}", "score": round(1.0 - i / 16, 4)} for i in range(10)],
        "filled_from_popular": 0,
    }
)


async def fixed(_: Request) -> Response:
    """The same bytes as GET /v1/bench/fixed of our app."""
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route(PATH, fixed)])
