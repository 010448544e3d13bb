"""Typed settings: the only place that reads the environment (prefix RECSYS_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")


class Settings(BaseSettings):
    """Everything a process needs to know, read once per process from RECSYS_* variables."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL; when unset the CLI starts an embedded server under data_dir.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL; when unset the CLI starts an embedded redis-server under data_dir.",
    )
    data_dir: Path = Field(default=Path("var"), description="Local state of embedded servers.")
    artifact_dir: Path = Field(default=Path("var/artifacts"), description="Model versions.")

    # Ingestion rules.
    max_batch_events: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    rating_min: float = 1.0
    rating_max: float = 5.0
    future_tolerance_seconds: float = Field(default=300.0, ge=0)

    # HTTP server.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _check_ranges(self) -> Settings:
        if self.rating_min >= self.rating_max:
            raise ValueError("RECSYS_RATING_MIN must be below RECSYS_RATING_MAX")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("RECSYS_DB_POOL_MIN must not exceed RECSYS_DB_POOL_MAX")
        return self

    def require_database_url(self) -> str:
        """The database URL, or a clear error for code paths that cannot start one."""
        if not self.database_url:
            raise RuntimeError("RECSYS_DATABASE_URL is not set")
        return self.database_url
