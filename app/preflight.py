"""Start-up checks, shared by `serve` (before it prints anything) and `config check`.

    load_settings()            every GATEWAY_* / DATABASE_URL / REDIS_URL value  ─┐
    check_catalog(settings)    YAML, schema, models, and an adapter built for     ├─ SetupError
                               EVERY declared provider (hidden ones too), so an   │  naming the
                               unknown adapter name or bad option fails here      │  setting
    check_services(settings)   the database (and Redis, when set) answer        ─┘

A `SetupError` is an operator's mistake, not a bug: the CLI prints its one line and exits 2.
The catalog is loaded with its logger muted, so the caller decides where the warnings go (the
CLI prints each once; a served process logs them when its gateway starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping

import httpx
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from app.adapters.base import AdapterContext
from app.adapters.registry import build_adapter
from app.catalog.errors import CatalogError
from app.catalog.loader import Catalog, load_catalog
from app.db.engine import make_engine
from app.settings import Settings

#: how long one connection attempt to the database or Redis may take
CONNECT_TIMEOUT_S = 5.0


class SetupError(Exception):
    """A setting or file an operator must fix; `str()` is the whole one-line explanation."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"]) or "settings"
        raise SetupError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None


def check_catalog(settings: Settings, env: Mapping[str, str] | None = None) -> Catalog:
    """The catalog as `serve` will load it, plus every provider's adapter built once."""
    with _muted("app.catalog.loader"):
        try:
            catalog = load_catalog(settings.gateway_config, os.environ if env is None else env)
        except CatalogError as exc:
            raise SetupError(f"GATEWAY_CONFIG: {exc}") from None
    context = AdapterContext(http=httpx.AsyncClient(), max_download_bytes=1)
    try:
        for name, provider in catalog.declared_providers.items():
            try:
                build_adapter(provider, context)
            except (ValueError, TypeError) as exc:
                raise SetupError(
                    f"GATEWAY_CONFIG: {settings.gateway_config}: providers.{name}: {exc}"
                ) from None
    finally:
        asyncio.run(context.http.aclose())
    return catalog


def check_services(settings: Settings) -> None:
    asyncio.run(check_database(settings))
    if settings.redis_url:
        asyncio.run(_check_redis(settings.redis_url))


def describe_database(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable)"


async def check_database(settings: Settings) -> None:
    """Connect once; SetupError naming DATABASE_URL when that fails."""
    shown = describe_database(settings.database_url)
    try:
        engine = make_engine(settings.database_url, pool_size=1)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise SetupError(f"DATABASE_URL: not a usable database URL ({shown}): {exc}") from None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (DBAPIError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "orig", None) or exc or type(exc).__name__
        raise SetupError(f"DATABASE_URL: cannot connect to {shown}: {reason}") from None
    finally:
        await engine.dispose()


async def _check_redis(url: str) -> None:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    try:
        client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    except ValueError as exc:
        raise SetupError(f"REDIS_URL: not a usable Redis URL: {exc}") from None
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise SetupError(f"REDIS_URL: cannot connect: {exc}") from None
    finally:
        await client.aclose()


@contextlib.contextmanager
def _muted(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was
