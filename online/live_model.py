"""The live Recommender of one API process: read by handlers, swapped by the reloader."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from shared.ranking.recommender import Recommender

log = logging.getLogger(__name__)


class ModelObserver(Protocol):
    """Told of swaps and refusals (on the reloader's thread): metrics, the usage recorder."""

    def model_swapped(self, previous: str | None, current: Recommender) -> None: ...

    def model_refused(self, version: str) -> None: ...


@dataclass
class LiveModel:
    """Holds the current immutable Recommender; replacing the reference is atomic.

    Handlers take `live.current` once per request and use that object to the end, so a
    request in flight finishes on the version it started with while new requests get the
    new one.
    """

    current: Recommender | None = None
    loaded_at: float | None = None  # time.time() of the last swap
    refused: Counter[str] = field(default_factory=Counter)  # version -> refusals
    swaps: int = 0
    observers: list[ModelObserver] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def swap(self, recommender: Recommender) -> None:
        with self._lock:
            previous = self.version
            self.current = recommender
            self.loaded_at = time.time()
            self.swaps += 1
        self._tell(lambda observer: observer.model_swapped(previous, recommender))

    def refuse(self, version: str) -> None:
        with self._lock:
            self.refused[version] += 1
        self._tell(lambda observer: observer.model_refused(version))

    @property
    def version(self) -> str | None:
        current = self.current
        return current.version if current else None

    def _tell(self, call: Callable[[ModelObserver], None]) -> None:
        """Notify every observer; one that fails is logged, never stops the reloader."""
        for observer in self.observers:
            try:
                call(observer)
            except Exception:
                log.exception("model observer %r failed", observer)
