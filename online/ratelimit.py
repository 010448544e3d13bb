"""Rate limits per API key and scope, shared by every API process through Redis.

The counting is the `limits` library's (its asyncio Redis storage over redis-py): with the
default fixed window, a request costs one INCR+EXPIRE script call. The limit of each scope is
a setting (`RECSYS_RATE_LIMIT_EVENTS=100/second`, ...); counters live under
`<redis_key_prefix>ratelimit:` so deployments and test runs sharing a Redis never meet.

When Redis cannot answer (down, too slow, or not configured), the scope decides:
- `recommend` and `events` fail open: the request goes on and is counted in
  `ratelimit_fail_open_total`. A shop's pages must not break because a counter store is
  down, and event posts are idempotent writes already bounded by the body and batch limits.
- `admin` and `analyst` are refused (503 with Retry-After): retrains and SQL over the cost
  tables are expensive, rare, and can wait for Redis rather than run unlimited.

No request waits long on a dead Redis: calls have short socket timeouts and no retries,
and after a failure a circuit breaker skips Redis for `rate_limit_breaker_seconds`, then
lets a single request probe it. The Redis client is built on first use, inside the worker
process's event loop (so after uvicorn forks), and closed at shutdown.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from online.errors import RateLimited, RateLimitUnavailable
from shared.keys import SCOPES
from shared.redis_url import redis_py_url
from shared.settings import Settings

log = logging.getLogger(__name__)
FAIL_OPEN_SCOPES = frozenset({"recommend", "events"})
_REDIS_ERRORS = (StorageError, redis.RedisError, OSError, TimeoutError)
# Fixed window (the default): one INCR+EXPIRE per request, cheapest, may let up to twice the
# limit through around a window's edge. Moving window: exact, keeps up to `limit` timestamps.
# Sliding window counter: two counters, smooths the edge at nearly fixed-window cost.
STRATEGIES: dict[str, Callable[[RedisStorage], RateLimiter]] = {
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}


@dataclass
class RateLimitCounters:
    """Process-local counts for /metrics: bumped on the event loop, so no lock is needed."""

    fail_open: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    unavailable: Counter[str] = field(default_factory=Counter)
    redis_errors: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "ratelimit_fail_open_total": dict(self.fail_open),
            "ratelimit_rejected_total": dict(self.rejected),
            "ratelimit_unavailable_total": dict(self.unavailable),
            "ratelimit_redis_errors_total": self.redis_errors,
        }


class CircuitBreaker:
    """Closed until a failure; then open for `cooldown` s; then one request probes at a time."""

    def __init__(self, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self.tripped = False
        self.open_until = 0.0
        self.probing = False

    def allows(self) -> bool:
        """Whether this request may call Redis (and, once tripped, becomes the probe)."""
        if not self.tripped:
            return True
        if self.clock() < self.open_until or self.probing:
            return False
        self.probing = True
        return True

    def record(self, *, ok: bool) -> None:
        self.probing = False
        self.tripped = not ok
        if not ok:
            self.open_until = self.clock() + self.cooldown


class KeyRateLimiter:
    """One per process (on app.state): `await check(scope, key_id)` or a 429/503 exception."""

    def __init__(self, settings: Settings) -> None:
        self.items: dict[str, RateLimitItem] = {
            scope: parse(getattr(settings, f"rate_limit_{scope}")) for scope in SCOPES
        }
        self.redis_url = settings.redis_url
        self.key_prefix = f"{settings.redis_key_prefix}ratelimit"
        self.strategy_name = settings.rate_limit_strategy
        self.timeout = settings.rate_limit_redis_timeout_seconds
        self.breaker = CircuitBreaker(settings.rate_limit_breaker_seconds)
        self.counters = RateLimitCounters()
        self._pool: redis.asyncio.ConnectionPool | None = None
        self._strategy: RateLimiter | None = None
        if not self.redis_url:
            log.warning("no RECSYS_REDIS_URL: rate limits cannot be counted (see FAIL_OPEN_SCOPES)")

    async def check(self, scope: str, key_id: str) -> None:
        """Count one request of key_id in scope; raise RateLimited or RateLimitUnavailable."""
        item = self.items[scope]
        strategy = self._strategy_or_none()
        allowed = None if strategy is None else await self._hit(strategy, item, scope, key_id)
        if allowed is None:
            self._without_redis(scope)
        elif not allowed:
            assert strategy is not None
            self.counters.rejected[scope] += 1
            retry_after = await self._retry_after(strategy, item, scope, key_id)
            raise RateLimited(scope=scope, limit=str(item), retry_after=retry_after)

    async def aclose(self) -> None:
        """Close this process's Redis connections (the app's lifespan calls this)."""
        if self._pool is not None:
            await self._pool.aclose()
        self._pool = self._strategy = None

    async def _hit(
        self, strategy: RateLimiter, item: RateLimitItem, scope: str, key_id: str
    ) -> bool | None:
        """True/False from Redis, or None when Redis is skipped or failed."""
        if not self.breaker.allows():
            return None
        ok = False
        try:
            allowed = await strategy.hit(item, scope, key_id)
            ok = True
        except _REDIS_ERRORS as exc:
            self.counters.redis_errors += 1
            log.warning(
                "rate limiter: Redis failed (%s); not asked again for %s s",
                exc,
                self.breaker.cooldown,
            )
            return None
        finally:
            self.breaker.record(ok=ok)
        return allowed

    def _without_redis(self, scope: str) -> None:
        """Fail open (counted) or refuse, by scope, when no count could be taken."""
        if scope in FAIL_OPEN_SCOPES:
            self.counters.fail_open[scope] += 1
            return
        self.counters.unavailable[scope] += 1
        retry_after = max(1, math.ceil(self.breaker.cooldown))
        raise RateLimitUnavailable(scope=scope, retry_after=retry_after)

    async def _retry_after(
        self, strategy: RateLimiter, item: RateLimitItem, scope: str, key_id: str
    ) -> int:
        """Whole seconds until the window frees a request (the window's length if unknown)."""
        try:
            stats = await strategy.get_window_stats(item, scope, key_id)
            wait = stats.reset_time - time.time()
        except _REDIS_ERRORS:
            wait = math.inf
        if not math.isfinite(wait):
            wait = float(item.get_expiry())
        return max(1, math.ceil(wait))

    def _strategy_or_none(self) -> RateLimiter | None:
        """The strategy over this process's Redis, built on first use; None without Redis."""
        if self._strategy is None and self.redis_url:
            self._strategy = self._build_strategy(self.redis_url)
        return self._strategy

    def _build_strategy(self, url: str) -> RateLimiter:
        plain = redis_py_url(url)
        # No retries: a failed call costs one timeout, then the breaker takes over.
        options: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        self._pool = redis.asyncio.ConnectionPool.from_url(plain, **options)
        storage_options: dict[str, Any] = {**options, "connection_pool": self._pool}
        storage = RedisStorage(
            _limits_uri(plain),
            implementation="redispy",
            key_prefix=self.key_prefix,
            wrap_exceptions=True,
            **storage_options,
        )
        return STRATEGIES[self.strategy_name](storage)


def _limits_uri(url: str) -> str:
    """The URL as limits' asyncio storage spells it: `async+redis://`, `async+redis+unix://`."""
    if url.startswith("unix://"):
        return "async+redis+unix://" + url.removeprefix("unix://")
    return f"async+{url}"
