"""Recommendations, similar items, popular items and the live model's description.

Scoring runs on the event loop: it is a few milliseconds of numpy on a memory-mapped,
read-only model, cheaper than a hop to the thread pool. Each request takes the live model
once, so a swap never changes the version under a request in flight. A version served with
the `batched` strategy answers user recommendations through the process's RequestBatcher
(shared.ranking.batching): concurrent requests share one scan, run in a worker thread.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from online.auth import require_scope
from online.errors import NoModel, json_response
from online.instrumentation import note_answer, note_no_model
from online.live_model import LiveModel
from online.recent import RecentEvents
from shared.ranking.batching import RequestBatcher
from shared.ranking.recommender import RankedList, Recommender

router = APIRouter(
    prefix="/v1", tags=["recommendations"], dependencies=[Depends(require_scope("recommend"))]
)

IdPath = Annotated[str, Path(min_length=1, max_length=256)]
Count = Annotated[int, Query(ge=1, le=100, description="How many items (1-100).")]
Exclude = Annotated[
    list[Annotated[str, Field(max_length=256)]],
    Query(max_length=100, description="Item ids never to return (repeat the parameter)."),
]
Category = Annotated[str | None, Query(max_length=256, description="Only items of it.")]
IncludeSeen = Annotated[bool, Query(description="Allow items the user interacted with.")]


class ScoredItem(BaseModel):
    item_id: str
    score: float


class ItemList(BaseModel):
    model_version: str
    source: str = Field(description="model, realtime or popular")
    items: list[ScoredItem]
    filled_from_popular: int = Field(description="Trailing items ranked by popularity.")


class UserList(ItemList):
    user_id: str


class BatchRequest(BaseModel):
    user_ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=100
    )
    n: int = Field(default=10, ge=1, le=100)
    exclude: list[Annotated[str, Field(max_length=256)]] = Field(default=[], max_length=100)
    category: Annotated[str, Field(max_length=256)] | None = None
    include_seen: bool = False


class BatchAnswer(BaseModel):
    model_version: str
    results: list[UserList]


def _live(request: Request) -> Recommender:
    live: LiveModel = request.app.state.live_model
    current = live.current
    if current is None:
        note_no_model(request)
        raise NoModel()
    return current


def _recent(request: Request) -> RecentEvents | None:
    recent: RecentEvents | None = request.app.state.recent_events
    return recent


def _batcher(request: Request, model: Recommender) -> RequestBatcher:
    """The process's batcher, built on first use (on the event loop, so only once) and again
    when a version with other batching knobs goes live."""
    state = request.app.state
    batcher: RequestBatcher | None = getattr(state, "request_batcher", None)
    if batcher is None or not batcher.fits(model.serving):
        batcher = state.request_batcher = RequestBatcher.for_strategy(model.serving)
    return batcher


def _items(ranked: RankedList) -> list[dict[str, Any]]:
    return [
        {"item_id": item, "score": score}
        for item, score in zip(ranked.item_ids, ranked.scores, strict=True)
    ]


def _list(model: Recommender, ranked: RankedList, **extra: Any) -> dict[str, Any]:
    return {
        "model_version": model.version,
        **extra,
        "source": ranked.source,
        "items": _items(ranked),
        "filled_from_popular": ranked.filled_from_popular,
    }


@router.get(
    "/users/{user_id}/recommendations",
    summary="What this shopper should see next",
    response_model=UserList,
    responses={503: {"description": "No model version is loaded yet"}},
)
async def recommendations(
    request: Request,
    user_id: IdPath,
    n: Count = 10,
    exclude: Exclude = [],  # noqa: B006 (FastAPI reads the default, never mutates it)
    category: Category = None,
    include_seen: IncludeSeen = False,
) -> Response:
    model = _live(request)
    recent = _recent(request)
    events = (await recent.fetch_many([user_id]))[user_id] if recent else []
    options: dict[str, Any] = {
        "n": n,
        "exclude": exclude,
        "category": category,
        "include_seen": include_seen,
        "recent": events,
    }
    if model.serving.name == "batched":
        ranked = await _batcher(request, model).recommend(user_id, model=model, **options)
    else:
        ranked = model.recommend(user_id, **options)
    note_answer(request, model.version, [ranked], fallbacks="user")
    return json_response(_list(model, ranked, user_id=user_id))


@router.post(
    "/recommendations",
    summary="Recommendations for up to 100 shoppers at once",
    response_model=BatchAnswer,
    responses={503: {"description": "No model version is loaded yet"}},
)
async def batch_recommendations(request: Request, body: BatchRequest) -> Response:
    model = _live(request)
    recent = _recent(request)
    events = await recent.fetch_many(body.user_ids) if recent else {}
    ranked = model.recommend_many(
        body.user_ids,
        n=body.n,
        exclude=body.exclude,
        category=body.category,
        include_seen=body.include_seen,
        recent=events,
    )
    note_answer(request, model.version, ranked, fallbacks="user")
    results = [
        _list(model, answer, user_id=user)
        for user, answer in zip(body.user_ids, ranked, strict=True)
    ]
    return json_response({"model_version": model.version, "results": results})


@router.get(
    "/items/popular",
    summary="The most popular available items",
    response_model=ItemList,
    responses={503: {"description": "No model version is loaded yet"}},
)
async def popular(
    request: Request,
    n: Count = 10,
    exclude: Exclude = [],  # noqa: B006
    category: Category = None,
) -> Response:
    model = _live(request)
    ranked = model.popular(n=n, exclude=exclude, category=category)
    note_answer(request, model.version, [ranked])
    return json_response(_list(model, ranked))


@router.get(
    "/items/{item_id}/similar",
    summary="Items like this one",
    response_model=ItemList,
    responses={
        404: {"description": "The model does not know the item"},
        503: {"description": "No model version is loaded yet"},
    },
)
async def similar(
    request: Request,
    item_id: IdPath,
    n: Count = 10,
    exclude: Exclude = [],  # noqa: B006
    category: Category = None,
) -> Response:
    model = _live(request)
    ranked = model.similar(item_id, n=n, exclude=exclude, category=category)
    note_answer(request, model.version, [ranked], fallbacks="item")
    return json_response(_list(model, ranked, item_id=item_id))


@router.get("/model", summary="The live model version: metrics and age")
async def live_model(request: Request) -> Response:
    model = _live(request)
    live: LiveModel = request.app.state.live_model
    manifest = model.manifest
    note_answer(request, model.version)  # no list, but this version answered
    return json_response(
        {
            "model_version": model.version,
            "algorithm": manifest.algorithm,
            "created_at": model.created_at.isoformat(),
            "age_seconds": round(time.time() - model.created_at.timestamp(), 1),
            "loaded_at": live.loaded_at,
            "params": manifest.params,
            "metrics": manifest.metrics,
            "data": manifest.data,
        }
    )
