"""Typed settings: the only place that reads the environment (prefix RECSYS_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.confidence import DEFAULT_WEIGHTS


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
    rating_min: float = Field(
        default=0.5,
        description="Lowest rating accepted: half stars (0.5-5) and 1-10 scales import as they "
        "come; narrow it for a shop whose own scale is stricter.",
    )
    rating_max: float = 10.0
    future_tolerance_seconds: float = Field(default=300.0, ge=0)

    # HTTP server.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=8, ge=1)
    bench_routes: bool = Field(
        default=False,
        description="Mount GET /v1/bench/fixed (a fixed answer, no auth) for bench/serve.py; "
        "leave off in production.",
    )

    # API keys and per-key rate limits (online/auth.py, online/ratelimit.py).
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a process trusts a key lookup: a revoked key stops working "
        "within this many seconds. 0 looks the key up on every request.",
    )
    rate_limit_recommend: str = Field(
        default="600/second",
        description="Requests per key and scope, in the `limits` notation: '600/second', "
        "'100/minute', '5000/hour'.",
    )
    rate_limit_events: str = "100/second"
    rate_limit_admin: str = "10/second"
    rate_limit_analyst: str = "10/second"
    rate_limit_strategy: Literal["fixed-window", "moving-window", "sliding-window-counter"] = (
        "fixed-window"
    )
    rate_limit_redis_timeout_seconds: float = Field(
        default=0.25, gt=0, description="Connect and read timeout of the rate limiter's Redis."
    )
    rate_limit_breaker_seconds: float = Field(
        default=2.0,
        ge=0,
        description="After a Redis failure the limiter skips Redis this long (no request "
        "waits on a dead server), then lets one request try again.",
    )

    # Serving.
    model_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often API processes look for a promotion when "
        "no NOTIFY arrives (the fallback of LISTEN/NOTIFY).",
    )
    recent_events_per_user: int = Field(default=50, ge=1, description="Kept for fold-in.")
    recent_events_ttl_seconds: int = Field(default=3 * 86400, ge=60)
    metering: bool = Field(
        default=True,
        description="Meter each request: serving usage rows for the cost ledger and request "
        "metrics on /metrics. Off: neither (the serving benchmark compares the two).",
    )

    # Celery (the offline path) on Redis.
    redis_key_prefix: str = Field(
        default="recsys:",
        description="Prefix of every Redis key Celery and RedBeat write; keeps deployments "
        "or test runs that share one Redis apart.",
    )
    worker_concurrency: int = Field(default=2, ge=1, description="Worker pool processes.")
    task_soft_time_limit_seconds: float = Field(
        default=3300.0, gt=0, description="A task gets SoftTimeLimitExceeded after this."
    )
    task_time_limit_seconds: float = Field(
        default=3600.0, gt=0, description="A task's pool process is killed after this."
    )
    task_result_expires_seconds: int = Field(default=7 * 86400, ge=60)
    beat_max_loop_interval: float = Field(
        default=30.0, gt=0, description="How soon beat sees a schedule edited in Redis."
    )

    # Retraining (the offline pipeline). Defaults are argued in README "Model defaults".
    train_window_days: int | None = Field(
        default=None, ge=1, description="Days back from the newest event; unset: all events."
    )
    min_user_events: int = Field(default=1, ge=1)
    min_item_events: int = Field(default=2, ge=1)
    weight_view: float = Field(default=DEFAULT_WEIGHTS["view"], ge=0)
    weight_click: float = Field(default=DEFAULT_WEIGHTS["click"], ge=0)
    weight_add_to_cart: float = Field(default=DEFAULT_WEIGHTS["add_to_cart"], ge=0)
    weight_purchase: float = Field(default=DEFAULT_WEIGHTS["purchase"], ge=0)
    ratings: Literal["scaled", "above_neutral", "signed"] = Field(
        default="scaled",
        description="How a rating weighs (README, 'How events are weighted'): 'scaled', every "
        "rating a positive interaction rising with its value; 'above_neutral', only the part "
        "above rating_neutral; 'signed', below neutral counts against the item.",
    )
    rating_neutral: float = 3.0
    rating_weight: float = Field(
        default=8.0, ge=0, description="Weight of the top rating ('scaled'): a purchase's."
    )
    half_life_days: float | None = Field(default=None, gt=0)
    algorithm: Literal["auto", "als", "bpr", "item_knn", "ease", "popularity"] = Field(
        default="auto",
        description="'auto': each retrain fits a small, budgeted set of candidates on the "
        "holdout and publishes the best (offline/selection.py); or pin one algorithm (it is "
        "still compared with the popularity baselines).",
    )
    selection_budget_seconds: float | None = Field(
        default=None, gt=0, description="CPU seconds the selection may spend; unset: no bound."
    )
    selection_budget_cost: float | None = Field(
        default=None,
        gt=0,
        description="Money (cost_currency) the selection may spend, priced with the price book.",
    )
    ease_max_items: int = Field(
        default=10_000,
        ge=2,
        description="EASE is refused above this many items: it holds a dense items x items "
        "matrix (about 12 bytes x items^2 while fitting: 1.1 GiB at 10,000).",
    )
    neighbours: int = Field(default=200, ge=1, le=10_000, description="item-kNN neighbours.")
    factors: int = Field(default=64, ge=1, le=1024)
    iterations: int | None = Field(
        default=None, ge=1, le=10_000, description="Unset: per algorithm."
    )
    regularization: float | None = Field(default=None, ge=0, description="Unset: the default.")
    alpha: float | None = Field(default=None, gt=0, description="Unset: the default.")
    scaling: Literal["bm25", "log", "none"] | None = None
    learning_rate: float = Field(default=0.01, gt=0)
    training_threads: int = Field(default=0, ge=0, description="implicit's threads; 0 = all.")
    random_state: int = 42
    eval_k: int = Field(default=10, ge=1, le=1000)
    eval_test_fraction: float = Field(default=0.2, gt=0, lt=1)
    eval_max_users: int = Field(
        default=5_000,
        ge=100,
        description="Test users sampled for evaluation (scoring them "
        "all costs as much as a fit on large shops; 5,000 keep NDCG's standard error ~0.005).",
    )
    serving_strategy: Literal["exact", "precomputed", "batched", "ann", "float16"] = Field(
        default="exact",
        description="How the API ranks a version's items (shared/serving_strategy.py); "
        "recorded in the version, so a change takes effect with the next retrain.",
    )
    gate_metric: Literal["ndcg", "map", "precision", "recall"] = "ndcg"
    gate_tolerance: float = Field(
        default=0.02, ge=0, lt=1, description="Largest relative loss against the live version."
    )
    final_fit: bool = Field(default=True, description="Refit on the whole window to publish.")
    keep_versions: int = Field(default=5, ge=2, description="Versions whose files are kept.")

    # Cost accounting (shared/costs.py, shared/usage.py). Money is in cost_currency.
    energy_watts_per_core: float = Field(
        default=3.5, ge=0, description="Estimated watts per busy core (no RAPL/NVML counter)."
    )
    energy_watts_per_gb: float = Field(
        default=0.392, ge=0, description="Estimated watts per GiB of memory held."
    )
    serving_vcpus: float | None = Field(
        default=None,
        gt=0,
        description="vCPUs given to the API processes of one host (VM size or container "
        "limit); unset: this host's CPU count. Allocated serving cost is priced from it.",
    )
    serving_processes: int | None = Field(
        default=None, ge=1, description="API processes sharing serving_vcpus; unset: workers."
    )
    usage_window_seconds: float = Field(
        default=60.0, ge=1, description="Serving counters are kept per window of this length."
    )
    usage_flush_interval_seconds: float = Field(
        default=15.0, gt=0, description="How often an API process writes its closed windows."
    )
    usage_max_pending_rows: int = Field(
        default=100_000,
        ge=1,
        description="Usage rows an API process keeps while the database is unreachable; "
        "the oldest past this are dropped (counted and logged).",
    )
    cost_currency: str = Field(
        default="USD",
        pattern=r"^[A-Z]{3}$",
        description="Currency of the budgets below and the default for new price versions.",
    )
    training_cost_ceiling: float | None = Field(
        default=None,
        gt=0,
        description="A retrain whose metered cost passes this is stopped (over_budget).",
    )
    daily_budget_training: float | None = Field(
        default=None, gt=0, description="Training cost per UTC day before it is flagged."
    )
    daily_budget_inference: float | None = Field(
        default=None, gt=0, description="Allocated serving cost per UTC day before it is flagged."
    )

    @field_validator(
        "rate_limit_recommend", "rate_limit_events", "rate_limit_admin", "rate_limit_analyst"
    )
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parsed = parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '100/second': {value!r}") from exc
        if len(parsed) != 1 or parsed[0].amount < 1:
            raise ValueError(f"give one positive rate limit, like '100/second': {value!r}")
        return value

    @model_validator(mode="after")
    def _check_ranges(self) -> Settings:
        if self.rating_min >= self.rating_max:
            raise ValueError("RECSYS_RATING_MIN must be below RECSYS_RATING_MAX")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("RECSYS_DB_POOL_MIN must not exceed RECSYS_DB_POOL_MAX")
        return self

    @model_validator(mode="after")
    def _check_task_limits(self) -> Settings:
        if self.task_soft_time_limit_seconds >= self.task_time_limit_seconds:
            raise ValueError(
                "RECSYS_TASK_SOFT_TIME_LIMIT_SECONDS must be below RECSYS_TASK_TIME_LIMIT_SECONDS"
            )
        return self

    def require_redis_url(self) -> str:
        """The Redis URL, or a clear error for code paths that cannot start one."""
        if not self.redis_url:
            raise RuntimeError("RECSYS_REDIS_URL is not set")
        return self.redis_url

    def require_database_url(self) -> str:
        """The database URL, or a clear error for code paths that cannot start one."""
        if not self.database_url:
            raise RuntimeError("RECSYS_DATABASE_URL is not set")
        return self.database_url
