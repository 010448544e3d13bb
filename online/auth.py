"""API keys on the /v1 routes: `APIRouter(dependencies=[Depends(require_scope("events"))])`.

Per request: read `Authorization: Bearer KEY`, find the key (401 when missing, malformed,
unknown or revoked), check that it holds the route's scope (403), count the request against
the key's limit for that scope (429, or 503 where the limiter is down: online/ratelimit.py),
and put the caller on `request.state.caller` for handlers and logs.

Lookups are cached in each process for `auth_cache_seconds` (5 s): a busy key costs one
indexed SELECT per process every few seconds instead of one per request, and a revoked key
stops working within that time. Only keys that exist are cached (revoked ones included), so
a key created a moment ago works at once and made-up keys cannot fill the memory; the cache
also has a fixed size.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from online.errors import Forbidden, Unauthorized
from online.ratelimit import KeyRateLimiter
from shared.keys import SCOPES, ApiKey, find_by_hash, hash_key, looks_like_key

CACHE_MAX_ENTRIES = 10_000
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="`Authorization: Bearer rk_...`, from `recsys keys create`.",
)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id, its name and its scopes (never the key)."""

    key_id: uuid.UUID
    name: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class _Entry:
    caller: Caller
    revoked: bool
    expires_at: float


class KeyCache:
    """Key hash -> what the database said about it, trusted for `ttl` seconds."""

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[bytes, _Entry] = {}

    def get(self, key_hash: bytes) -> _Entry | None:
        entry = self._entries.get(key_hash)
        if entry is not None and entry.expires_at <= self.clock():
            del self._entries[key_hash]
            return None
        return entry

    def put(self, key_hash: bytes, record: ApiKey) -> _Entry:
        caller = Caller(record.key_id, record.name, frozenset(record.scopes))
        entry = _Entry(caller, record.revoked_at is not None, self.clock() + self.ttl)
        if self.ttl > 0:
            self._entries.pop(key_hash, None)
            if len(self._entries) >= self.max_entries:  # drop the oldest (dicts keep order)
                del self._entries[next(iter(self._entries))]
            self._entries[key_hash] = entry
        return entry


def require_scope(scope: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency: a valid key holding `scope`, within its rate limit, or an error answer."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; scopes are {', '.join(SCOPES)}")

    async def authorized(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> Caller:
        caller = await _authenticate(request, credentials)
        if scope not in caller.scopes:
            raise Forbidden(scope)
        limiter: KeyRateLimiter = request.app.state.rate_limiter
        await limiter.check(scope, str(caller.key_id))
        request.state.caller = caller
        return caller

    return authorized


def current_caller(request: Request) -> Caller:
    """The caller require_scope admitted (for handlers on a router that requires a scope)."""
    caller: Caller = request.state.caller
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


async def _authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Caller:
    key = _bearer_key(request, credentials)
    key_hash = hash_key(key)
    cache: KeyCache = request.app.state.key_cache
    entry = cache.get(key_hash)
    if entry is None:
        pool: ConnectionPool = request.app.state.pool
        record = await run_in_threadpool(_lookup, pool, key_hash)
        if record is None:
            raise Unauthorized("unknown API key", key_given=True)
        entry = cache.put(key_hash, record)
    if entry.revoked:
        raise Unauthorized("this API key was revoked", key_given=True)
    return entry.caller


def _bearer_key(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The key from `Authorization: Bearer KEY`, or 401 saying what is wrong with the header."""
    if credentials is None:
        if "authorization" not in request.headers:
            raise Unauthorized("send an API key: 'Authorization: Bearer <key>'", key_given=False)
        raise Unauthorized("malformed Authorization header; use 'Bearer <key>'", key_given=True)
    if not looks_like_key(credentials.credentials):
        raise Unauthorized("malformed API key (keys look like rk_ + 43 characters)", key_given=True)
    return credentials.credentials


def _lookup(pool: ConnectionPool, key_hash: bytes) -> ApiKey | None:
    with pool.connection() as conn:
        return find_by_hash(conn, key_hash)
