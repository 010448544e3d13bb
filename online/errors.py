"""The one place that maps domain errors to HTTP answers (clear JSON, never a 500 for input)."""

from __future__ import annotations

import logging

import orjson
import psycopg
import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from psycopg_pool import PoolTimeout

from shared.control.results import BrokerUnavailable, ScheduleError
from shared.events import MalformedBody
from shared.ranking.recommender import UnknownItem
from shared.registry import RegistryError

log = logging.getLogger(__name__)


class PayloadTooLarge(ValueError):
    """The body or the batch is over the configured limit."""


class NothingValid(ValueError):
    """Every item of a batch was rejected; the answer lists why."""

    def __init__(self, answer: dict[str, object]) -> None:
        super().__init__("no valid item in the batch")
        self.answer = answer


class NotFound(LookupError):
    """The run, model version or schedule a request names does not exist."""


class NoModel(RuntimeError):
    """No model version is loaded in this process yet (none promoted, or none readable)."""


class Unauthorized(PermissionError):
    """No usable API key: missing, malformed, unknown or revoked (401)."""

    def __init__(self, detail: str, *, key_given: bool) -> None:
        super().__init__(detail)
        self.key_given = key_given


class Forbidden(PermissionError):
    """A valid key without the scope the route needs (403)."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"this key lacks the {scope!r} scope")
        self.scope = scope


class RateLimited(RuntimeError):
    """The key used up its requests for this scope in the current window (429)."""

    def __init__(self, *, scope: str, limit: str, retry_after: int) -> None:
        super().__init__(f"{limit} for scope {scope!r} used up; retry in {retry_after} s")
        self.retry_after = retry_after


class RateLimitUnavailable(RuntimeError):
    """Redis cannot count requests and the scope refuses to go unlimited (503)."""

    def __init__(self, *, scope: str, retry_after: int) -> None:
        super().__init__(f"the rate limiter is down; {scope!r} calls wait until it is back")
        self.retry_after = retry_after


def json_response(
    content: object, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MalformedBody)
    async def _malformed(_: Request, exc: MalformedBody) -> Response:
        return json_response({"error": "malformed_body", "detail": str(exc)}, 400)

    @app.exception_handler(PayloadTooLarge)
    async def _too_large(_: Request, exc: PayloadTooLarge) -> Response:
        return json_response({"error": "payload_too_large", "detail": str(exc)}, 413)

    @app.exception_handler(NothingValid)
    async def _nothing_valid(_: Request, exc: NothingValid) -> Response:
        return json_response({"error": "nothing_valid", **exc.answer}, 422)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's documented shape (detail: loc, msg, type), plus our `error` code.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return json_response({"error": "invalid_request", "detail": errors}, 422)

    @app.exception_handler(NoModel)
    async def _no_model(_: Request, exc: NoModel) -> Response:
        return json_response(
            {"error": "no_model", "detail": "no model version is loaded yet; train one"},
            503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(UnknownItem)
    async def _unknown_item(_: Request, exc: UnknownItem) -> Response:
        return json_response(
            {"error": "unknown_item", "detail": f"the live model does not know item {exc}"}, 404
        )

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> Response:
        return json_response({"error": "not_found", "detail": str(exc)}, 404)

    @app.exception_handler(RegistryError)
    async def _registry_conflict(_: Request, exc: RegistryError) -> Response:
        return json_response({"error": "conflict", "detail": str(exc)}, 409)

    @app.exception_handler(ScheduleError)
    async def _bad_schedule(_: Request, exc: ScheduleError) -> Response:
        return json_response({"error": "invalid_schedule", "detail": str(exc)}, 422)

    @app.exception_handler(BrokerUnavailable)
    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def _broker_down(_: Request, exc: Exception) -> Response:
        log.error("broker unavailable: %s", exc)
        detail = str(exc) if isinstance(exc, BrokerUnavailable) else "Redis is unreachable; retry"
        return json_response(
            {"error": "broker_unavailable", "detail": detail}, 503, headers={"Retry-After": "5"}
        )

    install_auth_handlers(app)

    @app.exception_handler(psycopg.DataError)
    async def _unstorable(_: Request, exc: psycopg.DataError) -> Response:
        # Input the validators let through but PostgreSQL cannot hold (e.g. a NUL character).
        return json_response({"error": "invalid_data", "detail": str(exc).splitlines()[0]}, 422)

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def _database_down(_: Request, exc: Exception) -> Response:
        log.error("database unavailable: %s", exc)
        return json_response(
            {"error": "database_unavailable", "detail": "the event store is unreachable; retry"},
            503,
            headers={"Retry-After": "1"},
        )


def install_auth_handlers(app: FastAPI) -> None:
    """401/403 carry WWW-Authenticate (RFC 6750); 429 and 503 carry Retry-After."""

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, exc: Unauthorized) -> Response:
        challenge = 'Bearer realm="recsys"'
        if exc.key_given:
            challenge += ', error="invalid_token"'
        return json_response(
            {"error": "unauthorized", "detail": str(exc)},
            401,
            headers={"WWW-Authenticate": challenge},
        )

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> Response:
        challenge = f'Bearer realm="recsys", error="insufficient_scope", scope="{exc.scope}"'
        return json_response(
            {"error": "forbidden", "detail": str(exc), "scope": exc.scope},
            403,
            headers={"WWW-Authenticate": challenge},
        )

    @app.exception_handler(RateLimited)
    async def _rate_limited(_: Request, exc: RateLimited) -> Response:
        return json_response(
            {"error": "rate_limited", "detail": str(exc), "retry_after": exc.retry_after},
            429,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(RateLimitUnavailable)
    async def _limiter_down(_: Request, exc: RateLimitUnavailable) -> Response:
        return json_response(
            {"error": "rate_limiter_unavailable", "detail": str(exc)},
            503,
            headers={"Retry-After": str(exc.retry_after)},
        )
