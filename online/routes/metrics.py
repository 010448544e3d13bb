"""GET /metrics: Prometheus' text format, open like the health probes (no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from online.metering import ServingMeter

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of every API process on this host",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Text exposition format"}},
)
async def metrics(request: Request) -> Response:
    meter: ServingMeter = request.app.state.meter
    meter.publish()  # on the event loop, like the counting: the tally needs no lock
    body, content_type = await run_in_threadpool(meter.metrics.exposition)
    return Response(body, media_type=content_type)
