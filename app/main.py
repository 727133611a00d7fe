"""The FastAPI application factory.

`create_app()` wires routes, the request-id middleware and the error handlers; the lifespan
builds the shared `Gateway` once (see `app.gateway`). Run it with `image-gateway serve`
(or `uvicorn app.main:create_app --factory`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.admin.endpoints import router as admin_router
from app.admin.webhooks import router as webhooks_router
from app.api.errors import register_error_handlers
from app.api.images import router as images_router
from app.api.models import router as models_router
from app.api.openapi import install_openapi
from app.api.request_id import RequestIdMiddleware
from app.api.usage import router as usage_router
from app.console import mount_console
from app.gateway import open_gateway
from app.settings import Settings, get_settings
from app.tuning import apply_process_tuning


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    apply_process_tuning()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_gateway(settings) as gateway:
            app.state.gateway = gateway
            yield

    app = FastAPI(
        title="image-gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served by install_openapi, with local assets
        redoc_url=None,
    )
    app.state.settings = settings
    register_error_handlers(app)
    app.include_router(images_router)
    app.include_router(models_router)
    app.include_router(usage_router)
    # the admin API answers 404 when it is off (require_admin); it is not documented then
    app.include_router(admin_router, include_in_schema=bool(settings.admin_token))
    app.include_router(webhooks_router, include_in_schema=bool(settings.admin_token))
    mount_console(app, settings)  # on with the admin API; not in the OpenAPI document
    install_openapi(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(RequestIdMiddleware)
    return app
