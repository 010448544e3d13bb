"""The batched strategy: concurrent requests of one API process share one scan of the items.

Scoring one user reads every item factor (25.6 MB at 100k x 64) to do 64 multiply-adds per
item: memory bound. Scoring 64 users in one `users x items` product reads the factors once,
so a batch costs little more than a single request. The batcher trades a short wait for that:

- when no scan is running, the first request waits up to `window_ms` for others (less if
  `max_batch` arrive first), then their scan starts in a worker thread (numpy releases the
  GIL during the product, so the event loop keeps accepting requests);
- requests arriving while a scan runs go, up to `max_batch`, into the next scan, which starts
  as soon as the running one ends (they have waited already);
- each request keeps its own options (n, exclude, category, include_seen, recent events);
  Recommender.recommend_requests groups the batch by category, one scan per group.

One batcher per process (or per replay); it holds no model of its own beyond the default,
so requests taken from the live model before and after a swap are answered by their own
version (a batch holding both scans each version once).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from shared.ranking.recommender import RankedList, RecentEvent, Recommender, UserRequest
from shared.serving_strategy import ServingStrategy

__all__ = ["RequestBatcher"]


@dataclass(frozen=True)
class _Waiting:
    model: Recommender
    request: UserRequest
    future: asyncio.Future[RankedList]


class RequestBatcher:
    """Collects concurrent recommend() calls on one event loop into shared scans."""

    def __init__(
        self,
        recommender: Recommender | None = None,
        *,
        window_ms: float = 1.0,
        max_batch: int = 64,
    ) -> None:
        if window_ms < 0 or max_batch < 1:
            raise ValueError("window_ms must be >= 0 and max_batch >= 1")
        self.recommender = recommender
        self.window_ms = window_ms
        self.max_batch = max_batch
        self.scans = 0  # shared scans run so far (one per batch)
        self.answered = 0  # requests those scans answered
        self._waiting: list[_Waiting] = []
        self._wake: asyncio.Future[None] | None = None
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    def for_strategy(
        cls, strategy: ServingStrategy, recommender: Recommender | None = None
    ) -> RequestBatcher:
        """A batcher with the strategy's window and batch size."""
        return cls(recommender, window_ms=strategy.batch_window_ms, max_batch=strategy.batch_max)

    def fits(self, strategy: ServingStrategy) -> bool:
        """Whether this batcher runs with the strategy's knobs."""
        return (self.window_ms, self.max_batch) == (strategy.batch_window_ms, strategy.batch_max)

    async def recommend(
        self,
        user_id: str,
        *,
        n: int,
        exclude: Collection[str] = (),
        category: str | None = None,
        include_seen: bool = False,
        recent: Sequence[RecentEvent] = (),
        model: Recommender | None = None,
    ) -> RankedList:
        """Recommender.recommend(), answered by the next shared scan (of `model`, else the
        batcher's own recommender)."""
        target = model or self.recommender
        if target is None:
            raise ValueError("no model: pass model= or build the batcher with a recommender")
        if n < 1:
            raise ValueError("n must be >= 1")  # refused here: it would fail its whole batch
        request = UserRequest(user_id, n, tuple(exclude), category, include_seen, tuple(recent))
        loop = asyncio.get_running_loop()
        if self._drain is not None and self._drain.get_loop() is not loop:
            # Left by another (closed) event loop: its requests can no longer be answered.
            self._waiting = [w for w in self._waiting if w.future.get_loop() is loop]
            self._drain = self._wake = None
        future: asyncio.Future[RankedList] = loop.create_future()
        self._waiting.append(_Waiting(target, request, future))
        if len(self._waiting) >= self.max_batch and self._wake and not self._wake.done():
            self._wake.set_result(None)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run())
        return await future

    async def aclose(self) -> None:
        """Wait for the requests already taken to be answered."""
        if self._drain is not None:
            await self._drain

    async def _run(self) -> None:
        """Scan batch after batch while requests wait; only the first batch waits the window."""
        first = True
        while self._waiting:
            if first and self.window_ms > 0 and len(self._waiting) < self.max_batch:
                self._wake = asyncio.get_running_loop().create_future()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake, self.window_ms / 1000)
                self._wake = None
            first = False
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            self.scans += 1
            self.answered += len(batch)
            results = await asyncio.to_thread(_answer, batch)
            for waiting, result in zip(batch, results, strict=True):
                if waiting.future.done():  # the caller went away (cancelled)
                    continue
                if isinstance(result, BaseException):
                    waiting.future.set_exception(result)
                else:
                    waiting.future.set_result(result)


def _answer(batch: list[_Waiting]) -> list[RankedList | BaseException]:
    """One recommend_requests() call per model in the batch (on the worker thread); a model
    that fails answers its own requests with the exception."""
    results: list[RankedList | BaseException | None] = [None] * len(batch)
    by_model: dict[int, list[int]] = {}
    for i, waiting in enumerate(batch):
        by_model.setdefault(id(waiting.model), []).append(i)
    for members in by_model.values():
        model = batch[members[0]].model
        try:
            answers: Sequence[RankedList | BaseException] = model.recommend_requests(
                [batch[i].request for i in members]
            )
        except Exception as exc:  # handed to each caller, not swallowed
            answers = [exc] * len(members)
        for i, answer in zip(members, answers, strict=True):
            results[i] = answer
    return [r for r in results if r is not None]
