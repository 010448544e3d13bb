"""Stand-in routes for scopes whose real routes do not exist yet (recommend, analyst).

Each answers who called, so tests can see what `require_scope` put on `request.state`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from online.auth import CallerDep, require_scope

PROBED_SCOPES = ("recommend", "analyst")


def add_probe_routes(app: FastAPI) -> FastAPI:
    """GET /v1/probe/{scope} for each probed scope, guarded like a real router would be."""
    for scope in PROBED_SCOPES:
        router = APIRouter(prefix="/v1/probe", dependencies=[Depends(require_scope(scope))])
        router.add_api_route(f"/{scope}", _who_called, methods=["GET"])
        app.include_router(router)
    return app


async def _who_called(caller: CallerDep) -> dict[str, Any]:
    return {"key_id": str(caller.key_id), "name": caller.name, "scopes": sorted(caller.scopes)}
