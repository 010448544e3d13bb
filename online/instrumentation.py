"""Per-request metering: a pure ASGI middleware that times each HTTP request and tallies it.

For every request it takes the route template (`scope["route"].path` once routing matched,
else "unmatched": raw paths would make one series per user id), the method, the status, the
latency and what a model route said it answered (`note_answer`: model version, items
returned, fallback reasons, on `request.state`), and adds them to a RequestTally of plain
dicts: one lookup, one bisect, a few additions. Nothing else happens on the request path:
online/metering.py hands the tally to the UsageRecorder (the cost ledger's serving rows) and
to the Prometheus metrics about once a second and before each scrape, on the event loop like
the tallying (so the tally needs no lock). Why not BaseHTTPMiddleware, nor a recorder or
Prometheus call per request: each costs more than the whole tally (prometheus_client's
multiprocess values write an mmap under a lock; the recorder takes a lock too).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.usage_rows import LATENCY_BOUNDS_MS, N_BUCKETS

if TYPE_CHECKING:
    from shared.ranking.recommender import RankedList

UNMATCHED = "unmatched"
OTHER_METHOD = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ANSWER_KEY = "recsys_answer"  # on request.state, i.e. scope["state"]
LATENCY_BOUNDS_S: tuple[float, ...] = tuple(ms / 1000.0 for ms in LATENCY_BOUNDS_MS)
FallbackKind = Literal["user", "item"]
CellKey = tuple[str, str, int, str | None]  # route, method, status, model version


@dataclass(frozen=True, slots=True)
class Answer:
    """What a route answered, for the middleware: the model version, items and fallbacks."""

    model_version: str | None = None
    items: int = 0
    cold_start: int = 0  # lists for users the model does not know: popular items instead
    popular_fill: int = 0  # lists whose tail came from popular items
    no_model: bool = False  # refused with 503: no model loaded in this process


def note_answer(
    request: Request,
    model_version: str,
    lists: Iterable[RankedList] = (),
    *,
    fallbacks: FallbackKind | None = None,
) -> None:
    """Say what a model route answered; `fallbacks` tells which popular items fell back.

    "user": a list from popularity alone is a cold start, a partly filled one a popular fill;
    "item": any fill is a popular fill; None: popularity is what was asked for.
    """
    items = cold = fill = 0
    for ranked in lists:
        items += len(ranked.item_ids)
        if fallbacks == "user" and ranked.source == "popular":
            cold += 1
        elif fallbacks is not None and ranked.filled_from_popular:
            fill += 1
    request.state.recsys_answer = Answer(model_version, items, cold, fill)


def note_no_model(request: Request) -> None:
    """Say that a model route was refused because this process has no model yet."""
    request.state.recsys_answer = Answer(no_model=True)


@dataclass(slots=True)
class RequestCell:
    """Requests of one route, method, status and model version since the last hand-over."""

    # per latency bucket, as shared.usage_rows.bucket_index() assigns them (the ledger's bounds)
    counts: list[int] = field(default_factory=lambda: [0] * N_BUCKETS)
    seconds: float = 0.0  # their latencies summed
    items: int = 0


@dataclass(slots=True)
class RequestTally:
    """Requests since the last hand-over; written and taken on the event loop only."""

    cells: dict[CellKey, RequestCell] = field(default_factory=dict)
    fallbacks: Counter[str] = field(default_factory=Counter)

    def add(
        self, route: str, method: str, status: int, seconds: float, answer: Answer | None
    ) -> None:
        key = (route, method, status, answer.model_version if answer else None)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = RequestCell()
        cell.counts[bisect_left(LATENCY_BOUNDS_MS, seconds * 1000.0)] += 1
        cell.seconds += seconds
        if answer is not None:
            cell.items += answer.items
            if answer.cold_start or answer.popular_fill or answer.no_model:
                self._add_fallbacks(answer)

    def _add_fallbacks(self, answer: Answer) -> None:
        if answer.cold_start:
            self.fallbacks["cold_start"] += answer.cold_start
        if answer.popular_fill:
            self.fallbacks["popular_fill"] += answer.popular_fill
        if answer.no_model:
            self.fallbacks["no_model"] += 1


@dataclass(slots=True)
class RequestMeter:
    """The middleware's tally, handed over whole: the next request starts a new one."""

    tally: RequestTally = field(default_factory=RequestTally)

    def take(self) -> RequestTally:
        """Hand over the tally and start a new one (on the event loop, between requests)."""
        taken, self.tally = self.tally, RequestTally()
        return taken


class InstrumentationMiddleware:
    """Times and tallies each HTTP request into a RequestMeter; other scopes pass through."""

    def __init__(self, app: ASGIApp, *, meter: RequestMeter) -> None:
        self.app = app
        self.meter = meter
        self._endpoint_paths: dict[object, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before answering

        def send_and_note(message: Message) -> Awaitable[None]:
            # Not a coroutine: the caller awaits `send`'s own, one frame less per message.
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self._count(scope, status, time.perf_counter() - started)

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template: str = route.path if route is not None else self._plain_route(scope)
        method: str = scope["method"]
        if method not in _METHODS:
            method = OTHER_METHOD  # clients choose methods: keep the label set bounded
        state = scope.get("state")
        answer: Answer | None = state.get(ANSWER_KEY) if state else None
        self.meter.tally.add(template, method, status, seconds, answer)

    def _plain_route(self, scope: Scope) -> str:
        """The template of a plain Starlette route (FastAPI's /docs, /openapi.json), which
        leaves no scope["route"], only its endpoint; "unmatched" when routing found none."""
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED
        path = self._endpoint_paths.get(endpoint)
        if path is None:
            routes = getattr(scope.get("app"), "routes", ())
            found = [r.path for r in routes if getattr(r, "endpoint", None) is endpoint]
            path = self._endpoint_paths[endpoint] = str(found[0]) if found else UNMATCHED
        return path
