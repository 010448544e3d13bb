"""Redis URLs: which server to use (configured or embedded) and how each client spells it.

A unix socket is `unix:///path` to redis-py (and so RedBeat) but `redis+socket:///path` to
kombu and Celery's result backend; the canonical form in settings and the environment is the
redis-py one. Socket URLs address database 0.
"""

from __future__ import annotations

from shared.settings import Settings

_SOCKET_SCHEMES = ("unix://", "redis+socket://", "socket://")


def resolve_redis_url(settings: Settings) -> str:
    """The configured URL, or the embedded server's when RECSYS_REDIS_URL is unset."""
    if settings.redis_url:
        return settings.redis_url
    from shared.embedded import embedded_redis_url

    return embedded_redis_url(settings.data_dir)


def celery_redis_url(url: str) -> str:
    """The URL as kombu (broker) and Celery's Redis result backend accept it."""
    path = _socket_path(url)
    return url if path is None else f"redis+socket://{path}"


def redis_py_url(url: str) -> str:
    """The URL as `redis.Redis.from_url` (and RedBeat) accept it."""
    path = _socket_path(url)
    return url if path is None else f"unix://{path}"


def _socket_path(url: str) -> str | None:
    for scheme in _SOCKET_SCHEMES:
        if url.startswith(scheme):
            return url[len(scheme) :]
    return None
