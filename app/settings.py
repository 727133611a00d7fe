"""All runtime settings, read once from the environment (and `.env`) at start-up.

Every knob the gateway has lives here; nothing else reads `os.environ` (the catalog's
`${VAR}` secrets are resolved by the catalog loader from the mapping it is given).
"""

from __future__ import annotations

import os
import urllib.request
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.money import MoneyError, parse_usd

DEFAULT_SQLITE_PATH = Path("data") / "image-gateway.db"
#: the admin token guards every balance: short enough to guess is refused at start-up
MIN_ADMIN_TOKEN_CHARS = 32
DEFAULT_CONFIG_PATH = Path("config") / "models.yaml"


class LogLevel(StrEnum):
    """`GATEWAY_LOG_LEVEL`, any case; the names logging and uvicorn both understand."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"


def project_home() -> Path:
    """Where the default `data/` and `config/models.yaml` live: the source checkout this code
    runs from (so the CLI finds them from any directory), else the working directory (an
    installed package, e.g. the container, which sets GATEWAY_HOME)."""
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / DEFAULT_CONFIG_PATH).is_file() else Path.cwd()


def normalize_database_url(url: str) -> str:
    """Accept plain `sqlite:///` / `postgresql://` URLs and pick the async driver ourselves."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    #: base of the defaults below; explicit relative DATABASE_URL / GATEWAY_CONFIG stay as given
    gateway_home: Path = Field(default_factory=project_home, validation_alias="GATEWAY_HOME")
    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_SQLITE_PATH}", validation_alias="DATABASE_URL"
    )
    gateway_config: Path = Field(default=DEFAULT_CONFIG_PATH, validation_alias="GATEWAY_CONFIG")
    #: at least MIN_ADMIN_TOKEN_CHARS characters; unset = the admin API is off
    admin_token: str | None = Field(default=None, validation_alias="GATEWAY_ADMIN_TOKEN")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    #: set by `serve --workers N` for its workers (never by hand): the supervisor to SIGHUP
    #: so that an admin catalog reload reaches every worker, not only the one that answered
    supervisor_pid: int | None = Field(default=None, validation_alias="GATEWAY_SUPERVISOR_PID")

    # Keys
    key_cache_ttl_s: float = Field(default=2.0, ge=0, validation_alias="GATEWAY_KEY_CACHE_TTL_S")
    #: how long an unknown key is remembered as unknown (new secrets are fresh random values)
    unknown_key_cache_ttl_s: float = Field(
        default=300.0, gt=0, validation_alias="GATEWAY_UNKNOWN_KEY_CACHE_TTL_S"
    )
    #: failed credential attempts per client address: a burst, then one per refill interval
    key_failure_burst: int = Field(default=20, ge=1, validation_alias="GATEWAY_KEY_FAILURE_BURST")
    key_failure_refill_s: float = Field(
        default=3.0, gt=0, validation_alias="GATEWAY_KEY_FAILURE_REFILL_S"
    )
    admin_failure_burst: int = Field(
        default=5, ge=1, validation_alias="GATEWAY_ADMIN_FAILURE_BURST"
    )
    admin_failure_refill_s: float = Field(
        default=12.0, gt=0, validation_alias="GATEWAY_ADMIN_FAILURE_REFILL_S"
    )
    default_key_rpm: int | None = Field(
        default=None, gt=0, validation_alias="GATEWAY_DEFAULT_KEY_RPM"
    )
    default_key_max_concurrency: int | None = Field(
        default=None, gt=0, validation_alias="GATEWAY_DEFAULT_KEY_MAX_CONCURRENCY"
    )

    # Money
    hold_timeout_s: float = Field(default=900.0, gt=0, validation_alias="GATEWAY_HOLD_TIMEOUT_S")
    sweep_interval_s: float = Field(default=30.0, gt=0, validation_alias="GATEWAY_SWEEP_INTERVAL_S")
    idempotency_ttl_s: int = Field(
        default=86_400, gt=0, validation_alias="GATEWAY_IDEMPOTENCY_TTL_S"
    )
    demo_balance_usd: str = Field(default="10", validation_alias="GATEWAY_DEMO_BALANCE")
    #: tests only: a file holding an ISO-8601 instant that is "now" for budget calendars
    #: (read on every budgeted hold, so a test can move every process across midnight)
    clock_file: Path | None = Field(default=None, validation_alias="GATEWAY_TEST_CLOCK_FILE")

    # Limits on what crosses the wire
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, validation_alias="GATEWAY_MAX_REQUEST_BYTES"
    )
    max_download_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, validation_alias="GATEWAY_MAX_DOWNLOAD_BYTES"
    )
    #: per reference image of an edit (multipart part or decoded data: URI)
    max_image_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0, validation_alias="GATEWAY_MAX_IMAGE_BYTES"
    )
    #: decoded size of any image, the client's or the provider's (decompression bombs)
    max_image_pixels: int = Field(
        default=100_000_000, gt=0, validation_alias="GATEWAY_MAX_IMAGE_PIXELS"
    )

    # Image work (decode, transcode, render): bounded threads under a budget of decoded
    # megapixels in flight, so concurrent worst-case uploads queue instead of multiplying RSS
    image_workers: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1),
        ge=1,
        le=64,
        validation_alias="GATEWAY_IMAGE_WORKERS",
    )
    image_budget_megapixels: int = Field(
        default=100, ge=1, validation_alias="GATEWAY_IMAGE_BUDGET_MEGAPIXELS"
    )

    # Upstream HTTP
    #: connections to all providers together; image generations are slow (seconds to
    #: minutes), so every request in flight holds one: size it for the concurrency you serve
    upstream_max_connections: int = Field(
        default=4096, gt=0, validation_alias="GATEWAY_UPSTREAM_MAX_CONNECTIONS"
    )
    upstream_transport: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp", validation_alias="GATEWAY_UPSTREAM_TRANSPORT"
    )
    stream_keepalive_s: float = Field(
        default=15.0, gt=0, validation_alias="GATEWAY_STREAM_KEEPALIVE_S"
    )
    #: on shutdown (SIGTERM), how long open streams may still run before they are refunded
    #: and ended with an `event: error`; in-flight plain requests always finish
    shutdown_grace_s: float = Field(default=30.0, gt=0, validation_alias="GATEWAY_SHUTDOWN_GRACE_S")

    # Database pool: connections are held per statement (never across an upstream call), so
    # a few dozen serve thousands of requests in flight; beyond it requests queue (no overflow
    # connections: opening and closing them per burst cost more than the wait)
    db_pool_size: int = Field(default=20, ge=1, validation_alias="GATEWAY_DB_POOL_SIZE")
    #: how long a request waits for a pooled connection before it is answered 503
    db_pool_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias="GATEWAY_DB_POOL_TIMEOUT_S"
    )
    #: how long opening one database connection may take (an unreachable host, a full server)
    db_connect_timeout_s: float = Field(
        default=5.0, gt=0, validation_alias="GATEWAY_DB_CONNECT_TIMEOUT_S"
    )
    #: the longest one SQL statement may run or wait for a lock (Postgres `statement_timeout`,
    #: SQLite's busy timeout); the client gives up a little later when no answer comes at all
    db_statement_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias="GATEWAY_DB_STATEMENT_TIMEOUT_S"
    )

    log_level: LogLevel = Field(default=LogLevel.INFO, validation_alias="GATEWAY_LOG_LEVEL")

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case_log_level(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("demo_balance_usd")
    @classmethod
    def _demo_balance_is_usd(cls, value: str) -> str:
        try:
            micros = parse_usd(value)
        except MoneyError as exc:
            raise ValueError(f"not a USD amount: {exc}") from None
        if micros < 0:
            raise ValueError("must not be negative")
        return value

    # Webhooks (`app.webhooks`): delivery from the outbox, by every replica
    #: tests/dev only: accept http:// endpoint URLs (production endpoints must be https://)
    webhook_allow_http: bool = Field(default=False, validation_alias="GATEWAY_WEBHOOK_ALLOW_HTTP")
    #: accept endpoints resolving to private/loopback/link-local addresses (in-cluster receivers)
    webhook_allow_private: bool = Field(
        default=False, validation_alias="GATEWAY_WEBHOOK_ALLOW_PRIVATE"
    )
    #: PEM file of extra CAs to trust for endpoints (an internal CA); default: system trust
    webhook_ca_bundle: Path | None = Field(
        default=None, validation_alias="GATEWAY_WEBHOOK_CA_BUNDLE"
    )
    webhook_timeout_s: float = Field(
        default=15.0, gt=0, le=120, validation_alias="GATEWAY_WEBHOOK_TIMEOUT_S"
    )
    webhook_max_attempts: int = Field(
        default=10, ge=1, le=50, validation_alias="GATEWAY_WEBHOOK_MAX_ATTEMPTS"
    )
    #: the n-th retry waits about backoff * 2^(n-1) (with jitter), capped at max_backoff
    webhook_backoff_s: float = Field(
        default=5.0, gt=0, validation_alias="GATEWAY_WEBHOOK_BACKOFF_S"
    )
    webhook_max_backoff_s: float = Field(
        default=6 * 3600.0, gt=0, validation_alias="GATEWAY_WEBHOOK_MAX_BACKOFF_S"
    )
    webhook_poll_interval_s: float = Field(
        default=2.0, gt=0, le=300, validation_alias="GATEWAY_WEBHOOK_POLL_INTERVAL_S"
    )
    #: how long a claimed attempt belongs to its sender (a dead sender's runs out)
    webhook_lease_s: float = Field(default=60.0, gt=0, validation_alias="GATEWAY_WEBHOOK_LEASE_S")
    #: `key.expiring` is sent this long before a key expires (0: never)
    webhook_key_expiry_window_s: float = Field(
        default=7 * 86_400.0, ge=0, validation_alias="GATEWAY_WEBHOOK_KEY_EXPIRY_WINDOW_S"
    )
    webhook_scan_interval_s: float = Field(
        default=300.0, gt=0, validation_alias="GATEWAY_WEBHOOK_SCAN_INTERVAL_S"
    )
    #: finished deliveries and their events are deleted after this many days (the dedupe of
    #: once-per-window events needs them for a month: at least 32)
    webhook_retention_days: int = Field(
        default=35, ge=32, le=3650, validation_alias="GATEWAY_WEBHOOK_RETENTION_DAYS"
    )

    # Provider circuit breaker (shared through REDIS_URL when set)
    breaker_failure_threshold: int = Field(
        default=5, ge=1, le=1000, validation_alias="GATEWAY_BREAKER_FAILURE_THRESHOLD"
    )
    breaker_cooldown_s: float = Field(
        default=30.0, gt=0, le=86_400, validation_alias="GATEWAY_BREAKER_COOLDOWN_S"
    )

    @model_validator(mode="after")
    def _webhook_timings_fit(self) -> Settings:
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError(
                f"GATEWAY_WEBHOOK_LEASE_S ({self.webhook_lease_s:g}) must be longer than "
                f"GATEWAY_WEBHOOK_TIMEOUT_S ({self.webhook_timeout_s:g}): a lease that ends "
                "mid-send lets another replica send the same attempt"
            )
        if self.webhook_max_backoff_s < self.webhook_backoff_s:
            raise ValueError(
                "GATEWAY_WEBHOOK_MAX_BACKOFF_S must be at least GATEWAY_WEBHOOK_BACKOFF_S"
            )
        if self.webhook_ca_bundle is not None and not self.webhook_ca_bundle.is_file():
            raise ValueError(f"GATEWAY_WEBHOOK_CA_BUNDLE: no such file: {self.webhook_ca_bundle}")
        return self

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, value: str | None) -> str | None:
        if not value:  # unset or empty: the admin API is off
            return None
        if len(value) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"GATEWAY_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters "
                f"(it has {len(value)}); generate one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @property
    def upstream_proxy_from_env(self) -> bool:
        """HTTP(S)_PROXY / ALL_PROXY set: the upstream client must read the environment."""
        return bool(urllib.request.getproxies_environment())

    # Operator console (`/console`, on with the admin API)
    console_session_ttl_s: int = Field(
        default=8 * 3600, gt=0, validation_alias="GATEWAY_CONSOLE_SESSION_TTL_S"
    )
    #: signs console session cookies; default: derived from GATEWAY_ADMIN_TOKEN
    console_secret: str | None = Field(default=None, validation_alias="GATEWAY_CONSOLE_SECRET")

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalize_database_url(value)

    @model_validator(mode="after")
    def _defaults_under_home(self) -> Settings:
        if "database_url" not in self.model_fields_set:
            self.database_url = normalize_database_url(
                f"sqlite:///{self.gateway_home / DEFAULT_SQLITE_PATH}"
            )
        if "gateway_config" not in self.model_fields_set:
            self.gateway_config = self.gateway_home / DEFAULT_CONFIG_PATH
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # Pairs of settings where one cannot do its job next to the other. The message starts
        # with the setting to change: `app.preflight` prints it as the one line of the refusal.
        if self.sweep_interval_s >= self.hold_timeout_s:
            raise PydanticCustomError(
                "settings_conflict",
                "GATEWAY_SWEEP_INTERVAL_S: {sweep} must be below GATEWAY_HOLD_TIMEOUT_S "
                "({hold}), or expired holds wait longer than the timeout says",
                {"sweep": f"{self.sweep_interval_s:g}", "hold": f"{self.hold_timeout_s:g}"},
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
