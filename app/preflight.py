"""Start-up checks, shared by `serve` (before it prints anything) and `config check`.

    load_settings()            every GATEWAY_* / DATABASE_URL / REDIS_URL value  ─┐
    check_catalog(settings)    YAML, schema, models, and an adapter built for     ├─ SetupError
                               EVERY declared provider (hidden ones too), so an   │  naming the
                               unknown adapter name or bad option fails here;     │  setting
                               every model's worst case below the hold timeout    │
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
from app.db.engine import engine_for
from app.db.faults import DatabaseUnavailable
from app.images.routing import upstream_deadline_s
from app.settings import Settings

#: how long one connection attempt to the database or Redis may take
CONNECT_TIMEOUT_S = 5.0
#: time for a request's images to be decoded and transcoded after the provider answered,
#: including the wait for the image work pool (up to 4 images of up to 100 MP each, on a
#: loaded machine: seconds each, so a minute is a generous bound)
IMAGE_WORK_MARGIN_S = 60.0


class SetupError(Exception):
    """A setting or file an operator must fix; `str()` is the whole one-line explanation."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a cross-check: its message starts with the setting to change
            raise SetupError(message) from None
        name = ".".join(str(part) for part in first["loc"])
        raise SetupError(f"{name}: {message} (got {first.get('input')!r})") from None


def check_catalog(settings: Settings, env: Mapping[str, str] | None = None) -> Catalog:
    """The catalog as `serve` will load it, plus every provider's adapter built once."""
    with muted("app.catalog.loader"):
        try:
            catalog = load_catalog(settings.gateway_config, os.environ if env is None else env)
        except CatalogError as exc:
            raise SetupError(f"GATEWAY_CONFIG: {exc}") from None
    check_hold_timeout(settings, catalog)
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


def hold_margin_s(settings: Settings) -> float:
    """What a request may still spend after its upstream deadline, its hold already taken.

    After the provider answers, the images are decoded and transcoded (queued under the image
    work pool's megapixel budget: `IMAGE_WORK_MARGIN_S`), then the hold is settled, which may
    wait for a pooled connection (`GATEWAY_DB_POOL_TIMEOUT_S`) and run for up to a statement
    timeout (`GATEWAY_DB_STATEMENT_TIMEOUT_S`)."""
    return IMAGE_WORK_MARGIN_S + settings.db_pool_timeout_s + settings.db_statement_timeout_s


def check_hold_timeout(settings: Settings, catalog: Catalog) -> None:
    """Refuse a model whose requests can outlive their hold: the sweeper would refund a hold
    that is still going to be settled, and the request would deliver images it cannot charge."""
    margin_s = hold_margin_s(settings)
    models = [*catalog.models.values(), *(hidden.model for hidden in catalog.hidden.values())]
    for model in models:
        if not model.routes:
            continue
        worst_s = upstream_deadline_s(model.config, catalog.declared_providers) + margin_s
        if worst_s >= settings.hold_timeout_s:
            raise SetupError(
                f"GATEWAY_HOLD_TIMEOUT_S: {settings.hold_timeout_s:g} s is not above the "
                f'worst case of model "{model.id}", {worst_s:g} s (its routes\' timeout_s, or '
                f"its deadline_s, plus {margin_s:g} s to finish and settle); raise "
                "GATEWAY_HOLD_TIMEOUT_S or lower the model's timeouts"
            )


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
        engine = engine_for(settings, pool_size=1)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise SetupError(f"DATABASE_URL: not a usable database URL ({shown}): {exc}") from None
    try:
        with muted("app.db.faults"):  # the SetupError below is the one line to print
            async with asyncio.timeout(CONNECT_TIMEOUT_S), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except (DatabaseUnavailable, DBAPIError, OSError, TimeoutError) as exc:
        cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else exc
        reason = getattr(cause, "orig", None) or str(cause) or type(cause).__name__
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
def muted(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was
