"""The FastAPI application factory.

`create_app()` wires routes, the request-id and observability middleware and the error
handlers; the lifespan builds the shared `Gateway` once (see `app.gateway`), starts the runtime
sampler and, when an OTLP endpoint is set, tracing. Run it with `image-gateway serve` (or
`uvicorn app.main:serve_app --factory`): `serve_app` is `create_app` for a process of its own,
which also configures the process's logging (`app.observability.setup`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.admin.endpoints import router as admin_router
from app.admin.webhooks import router as webhooks_router
from app.api.errors import register_error_handlers
from app.api.hot_routes import HotRoutes
from app.api.images import router as images_router
from app.api.images import serve_generation
from app.api.models import router as models_router
from app.api.openapi import install_openapi
from app.api.operations import router as operations_router
from app.api.request_id import RequestIdMiddleware
from app.api.usage import router as usage_router
from app.console import mount_console
from app.gateway import open_gateway
from app.observability import tracing
from app.observability.middleware import ObservabilityMiddleware
from app.observability.runtime import sampling
from app.observability.setup import configure_process_logging
from app.pools import PoolGauge
from app.settings import Settings, get_settings
from app.tuning import apply_process_tuning


def _pools(app: FastAPI) -> list[PoolGauge]:
    gateway = getattr(app.state, "gateway", None)
    return gateway.pools if gateway is not None else []


def serve_app() -> FastAPI:
    """The server's factory: settings from the environment, and the process's logging."""
    settings = get_settings()
    configure_process_logging(settings)
    return create_app(settings, own_process=True)


def create_app(settings: Settings | None = None, *, own_process: bool = False) -> FastAPI:
    settings = settings or get_settings()
    apply_process_tuning()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        traces_url = settings.otlp_traces_url
        if traces_url is not None:
            tracing.start_tracing(traces_url, service_name=settings.otel_service_name)
        try:
            # the sampler outlives the gateway: stopping it must not yield to the loop before
            # the gateway has stopped its sweeper (a sweep cut off mid-connect leaks a thread)
            async with sampling(lambda: _pools(app)), open_gateway(settings) as gateway:
                if own_process:  # the catalog's provider keys join the scrubbed secrets
                    catalog = gateway.catalog
                    providers = {**catalog.declared_providers, **catalog.providers}
                    configure_process_logging(settings, providers.values())
                app.state.gateway = gateway
                yield
        finally:
            if traces_url is not None:
                tracing.stop_tracing()

    app = FastAPI(
        title="image-gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served by install_openapi, with local assets
        redoc_url=None,
        # FastAPI's own OpenTelemetry hooks: tracing is the gateway's (app.observability.tracing,
        # the server span in its middleware); left on, they read the environment per request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    register_error_handlers(app)
    app.include_router(images_router)
    app.include_router(models_router)
    app.include_router(usage_router)
    # the admin API answers 404 when it is off (require_admin); it is not documented then
    app.include_router(admin_router, include_in_schema=bool(settings.admin_token))
    app.include_router(webhooks_router, include_in_schema=bool(settings.admin_token))
    app.include_router(operations_router)
    mount_console(app, settings)  # on with the admin API; not in the OpenAPI document
    install_openapi(app)

    # innermost: the hot route skips the router and the dependency solver, not the above
    app.add_middleware(HotRoutes, routes={("POST", "/v1/images/generations"): serve_generation})
    app.add_middleware(ObservabilityMiddleware, access_log=settings.access_log)
    app.add_middleware(RequestIdMiddleware)  # outermost: the request id exists for the above
    return app
