"""All runtime settings, read once from the environment (and `.env`) at start-up.

Every knob the gateway has lives here; nothing else reads `os.environ` (the catalog's
`${VAR}` secrets are resolved by the catalog loader from the mapping it is given).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("data") / "image-gateway.db"


def normalize_database_url(url: str) -> str:
    """Accept plain `sqlite:///` / `postgresql://` URLs and pick the async driver ourselves."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_SQLITE_PATH}", validation_alias="DATABASE_URL"
    )
    gateway_config: Path = Field(
        default=Path("config/models.yaml"), validation_alias="GATEWAY_CONFIG"
    )
    admin_token: str | None = Field(default=None, validation_alias="GATEWAY_ADMIN_TOKEN")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")

    # Keys
    key_cache_ttl_s: float = Field(default=2.0, validation_alias="GATEWAY_KEY_CACHE_TTL_S")
    default_key_rpm: int | None = Field(default=None, validation_alias="GATEWAY_DEFAULT_KEY_RPM")
    default_key_max_concurrency: int | None = Field(
        default=None, validation_alias="GATEWAY_DEFAULT_KEY_MAX_CONCURRENCY"
    )

    # Money
    hold_timeout_s: float = Field(default=900.0, validation_alias="GATEWAY_HOLD_TIMEOUT_S")
    sweep_interval_s: float = Field(default=30.0, validation_alias="GATEWAY_SWEEP_INTERVAL_S")
    idempotency_ttl_s: int = Field(default=86_400, validation_alias="GATEWAY_IDEMPOTENCY_TTL_S")
    demo_balance_usd: str = Field(default="10", validation_alias="GATEWAY_DEMO_BALANCE")

    # Limits on what crosses the wire
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, validation_alias="GATEWAY_MAX_REQUEST_BYTES"
    )
    max_download_bytes: int = Field(
        default=50 * 1024 * 1024, validation_alias="GATEWAY_MAX_DOWNLOAD_BYTES"
    )
    #: per reference image of an edit (multipart part or decoded data: URI)
    max_image_bytes: int = Field(
        default=20 * 1024 * 1024, validation_alias="GATEWAY_MAX_IMAGE_BYTES"
    )
    #: decoded size of any image, the client's or the provider's (decompression bombs)
    max_image_pixels: int = Field(default=100_000_000, validation_alias="GATEWAY_MAX_IMAGE_PIXELS")

    # Upstream HTTP
    upstream_max_connections: int = Field(
        default=200, validation_alias="GATEWAY_UPSTREAM_MAX_CONNECTIONS"
    )
    upstream_transport: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp", validation_alias="GATEWAY_UPSTREAM_TRANSPORT"
    )
    stream_keepalive_s: float = Field(default=15.0, validation_alias="GATEWAY_STREAM_KEEPALIVE_S")

    # Database pool
    db_pool_size: int = Field(default=10, validation_alias="GATEWAY_DB_POOL_SIZE")

    log_level: str = Field(default="info", validation_alias="GATEWAY_LOG_LEVEL")

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

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
