"""The live Recommender of one API process: read by handlers, swapped by the reloader."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from online.recommender import Recommender


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def swap(self, recommender: Recommender) -> None:
        with self._lock:
            self.current = recommender
            self.loaded_at = time.time()
            self.swaps += 1

    def refuse(self, version: str) -> None:
        with self._lock:
            self.refused[version] += 1

    @property
    def version(self) -> str | None:
        current = self.current
        return current.version if current else None
