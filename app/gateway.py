"""The process-wide `Gateway`: everything built once at start-up and shared by every request.

`open_gateway(settings)` is the application's lifespan: it loads and compiles the catalog, opens
one database engine and ONE pooled upstream client, builds one adapter per catalog provider,
the ledger, key services, rate limiter, the `ImageService` (with exactly what it uses) and the
background sweeper, and tears it all down in reverse order (requests still at work first).
Routes reach it as `request.app.state.gateway`. Lower layers never import this module. While it
is open, SIGHUP reloads the catalog in place (`app.catalog.reload`; also
`POST /admin/v1/catalog/reload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.base import AdapterContext, ImageAdapter
from app.adapters.registry import build_adapter
from app.catalog.account_pricing import AccountPricing
from app.catalog.live import CatalogSnapshot, LiveCatalog
from app.catalog.loader import Catalog, load_catalog
from app.catalog.reload import CatalogReloader, reload_on_sighup
from app.db.engine import engine_for
from app.db.models import Account
from app.db.pool import pool_gauge
from app.images.admission import Admissions
from app.images.breaker import Breaker, Event, Transition, make_breaker
from app.images.routing import Router
from app.images.service import ImageLimits, ImageService
from app.images.work import ImageWorkPool
from app.keys.auth import KeyAuthenticator
from app.keys.service import KeyService
from app.ledger.budgets import file_clock
from app.ledger.idempotency import IdempotencyStore
from app.ledger.service import Ledger
from app.ledger.sweeper import Sweeper
from app.pools import PoolGauge
from app.ratelimit import make_rate_limiter
from app.ratelimit.base import RateLimiter
from app.security.throttle import FailureThrottle
from app.settings import Settings
from app.upstream_client import UpstreamHttp, make_http_client, upstream_occupancy
from app.webhooks.destinations import DestinationPolicy
from app.webhooks.dispatcher import DeliveryPolicy, Dispatcher, make_client, running
from app.webhooks.events import provider_transition
from app.webhooks.service import WebhookService

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Gateway:
    settings: Settings
    #: the catalog and adapters in force, swapped whole by a reload (`app.catalog.live`)
    live: LiveCatalog
    engine: AsyncEngine
    http: UpstreamHttp
    ledger: Ledger
    keys: KeyService
    authenticator: KeyAuthenticator
    idempotency: IdempotencyStore
    rate_limiter: RateLimiter
    #: decoding, transcoding and rendering, under the megapixel budget (`app.images.work`)
    image_work: ImageWorkPool
    #: failed admin-token attempts per client address (`app.security.throttle`)
    admin_throttle: FailureThrottle
    #: generations and edits (`app.images.service`)
    images: ImageService
    #: re-reads the catalog file into `live` (SIGHUP, `POST /admin/v1/catalog/reload`)
    reloader: CatalogReloader
    #: webhook endpoints and deliveries (`app.webhooks`); the dispatcher sends from the outbox
    webhooks: WebhookService
    dispatcher: Dispatcher
    #: provider health for the `Router` (`app.images.breaker`): shared through Redis when
    #: REDIS_URL is set; its transitions become `provider.*` webhook events
    breaker: Breaker
    #: the upstream and database pools' occupancy, for metrics (app.pools)
    pools: list[PoolGauge] = field(default_factory=list)

    @property
    def catalog(self) -> Catalog:
        return self.live.current.catalog

    @property
    def adapters(self) -> Mapping[str, ImageAdapter]:
        return self.live.current.adapters


def build_adapters(catalog: Catalog, context: AdapterContext) -> dict[str, ImageAdapter]:
    return {name: build_adapter(provider, context) for name, provider in catalog.providers.items()}


def pool_gauges(gateway: Gateway) -> list[PoolGauge]:
    """The database pool as SQLAlchemy's queue sees it (every statement, not only the ledger's)
    and the upstream pool (`app.pools`)."""
    gauges = []
    database = pool_gauge(gateway.engine)
    if database is not None:
        gauges.append(database)
    upstream = upstream_occupancy(gateway.http)
    if upstream is not None:
        gauges.append(upstream.gauge())
    return gauges


async def warn_about_account_pricing(engine: AsyncEngine, catalog: Catalog) -> None:
    """Start-up check of the stored account prices against this catalog: an entry for a
    model the catalog no longer has is unused (that model is gone), so it is a warning."""
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(Account.id, Account.pricing).where(Account.pricing.is_not(None))
                )
            ).all()
    except Exception:  # not migrated yet, or unreachable: readiness reports that, not start-up
        logger.info("account prices not checked against the catalog: database unavailable")
        return
    for account_id, text in rows:
        try:
            pricing = AccountPricing.from_json(text)
            if pricing is not None:
                pricing.check_models(catalog.models)
        except ValueError as exc:
            logger.warning("account %s: %s", account_id, exc)


def provider_announcer(dispatcher: Dispatcher) -> Transition:
    """The breaker's hook: a provider's cool-down or recovery as a webhook event."""

    async def announce(provider: str, event: Event, since: str) -> None:
        await dispatcher.emit(provider_transition(provider, event, since=since))

    return announce


@contextlib.asynccontextmanager
async def open_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    catalog = load_catalog(settings.gateway_config, os.environ)  # logs its own warnings
    engine = engine_for(settings)
    http = make_http_client(settings)
    rate_limiter = make_rate_limiter(settings.redis_url)
    ledger = Ledger(engine, clock=file_clock(settings.clock_file))
    destinations = DestinationPolicy(
        allow_http=settings.webhook_allow_http, allow_private=settings.webhook_allow_private
    )
    dispatcher = Dispatcher(
        engine,
        functools.partial(
            make_client, timeout_s=settings.webhook_timeout_s, ca_bundle=settings.webhook_ca_bundle
        ),
        destinations=destinations,
        policy=DeliveryPolicy.from_settings(settings),
        clock=file_clock(settings.clock_file),
    )
    image_work = ImageWorkPool(
        workers=settings.image_workers,
        budget_pixels=settings.image_budget_megapixels * 1_000_000,
    )
    adapter_context = AdapterContext(
        http=http, max_download_bytes=settings.max_download_bytes, image_work=image_work
    )
    live = LiveCatalog(CatalogSnapshot(catalog, build_adapters(catalog, adapter_context)))
    # a claim stays in progress as long as its request may run: the hold timeout
    idempotency = IdempotencyStore(engine, lease_s=settings.hold_timeout_s)
    breaker = make_breaker(
        settings.redis_url,
        failure_threshold=settings.breaker_failure_threshold,
        cooldown_s=settings.breaker_cooldown_s,
        on_transition=provider_announcer(dispatcher),
    )
    gateway = Gateway(
        settings=settings,
        live=live,
        engine=engine,
        http=http,
        ledger=ledger,
        keys=KeyService(engine),
        authenticator=KeyAuthenticator(
            engine,
            ttl_s=settings.key_cache_ttl_s,
            unknown_ttl_s=settings.unknown_key_cache_ttl_s,
            failure_throttle=FailureThrottle(
                what="API key",
                burst=settings.key_failure_burst,
                refill_s=settings.key_failure_refill_s,
            ),
            default_rpm=settings.default_key_rpm,
            default_max_concurrency=settings.default_key_max_concurrency,
            now=file_clock(settings.clock_file),
        ),
        idempotency=idempotency,
        rate_limiter=rate_limiter,
        image_work=image_work,
        admin_throttle=FailureThrottle(
            what="admin token",
            burst=settings.admin_failure_burst,
            refill_s=settings.admin_failure_refill_s,
        ),
        images=ImageService(
            live=live,
            admissions=Admissions(
                ledger=ledger,
                idempotency=idempotency,
                rate_limiter=rate_limiter,
                idempotency_ttl_s=settings.idempotency_ttl_s,
            ),
            router=Router(breaker=breaker),  # process-wide: provider health, shared via Redis
            image_work=image_work,
            limits=ImageLimits(
                max_image_bytes=settings.max_image_bytes,
                max_image_pixels=settings.max_image_pixels,
                stream_keepalive_s=settings.stream_keepalive_s,
                shutdown_grace_s=settings.shutdown_grace_s,
            ),
        ),
        reloader=CatalogReloader(live, path=settings.gateway_config, context=adapter_context),
        webhooks=WebhookService(engine, dispatcher, destinations),
        dispatcher=dispatcher,
        breaker=breaker,
    )
    gateway.pools = pool_gauges(gateway)
    await warn_about_account_pricing(engine, catalog)
    sweeper = Sweeper(ledger, idempotency=gateway.idempotency)
    sweeper_task = asyncio.create_task(
        sweeper.run_forever(
            interval_s=settings.sweep_interval_s, hold_timeout_s=settings.hold_timeout_s
        ),
        name="ledger-sweeper",
    )
    try:
        with reload_on_sighup(gateway.reloader):
            async with running(
                dispatcher,
                poll_interval_s=settings.webhook_poll_interval_s,
                scan_interval_s=settings.webhook_scan_interval_s,
            ):
                yield gateway
    finally:
        await gateway.images.wait_idle()  # admitted requests settle, store and release
        sweeper_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper_task
        await dispatcher.aclose()
        await breaker.aclose()
        await ledger.wait_idle()  # settlements shielded from cancelled requests
        await rate_limiter.aclose()
        await http.aclose()
        await engine.dispose()
        image_work.shutdown()
