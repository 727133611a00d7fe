"""The operator console: `/console`, a server-rendered web UI over the admin services.

    mount_console(app, settings) ─▶ (only with GATEWAY_ADMIN_TOKEN set, like the admin API)
        /console/login, /logout         signin.py   admin token ─▶ signed session cookie
        /console/                       overview.py charts, top models and accounts, in flight
        /console/accounts[/{id}]        accounts.py list, search, create, credit, suspend
        /console/keys, /keys/{id}/...   keys.py     create, revoke, rotate, delete
        /console/requests[/{id}]        catalog_pages.py  the request log and one request
        /console/models                 catalog_pages.py  one card per catalog model
        /console/playground             playground.py     try a model, billed to an account
        /console/static/...             CSS, the console's script, vendored htmx

Every page calls the services the admin API calls (`Ledger`, `KeyService`, `CreditService`,
`Reports`) and reads forms through the admin API's request schemas: the console adds no rule
of its own. The catalog is read through `gateway.catalog` on every request, never kept, so a
catalog reload shows at once. Guards, rendering and the session live in `web.py` and
`session.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, FastAPI
from starlette.staticfiles import StaticFiles

from app.console import accounts, catalog_pages, keys, overview, playground, signin
from app.console.session import SessionCodec, signing_key
from app.console.web import HERE, Console, ConsoleRefusal, build_templates, refusal_handler
from app.settings import Settings

PREFIX = "/console"


def console_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    for module in (signin, overview, accounts, keys, catalog_pages, playground):
        router.include_router(module.router)
    return router


def mount_console(
    app: FastAPI, settings: Settings, *, clock: Callable[[], float] = time.time
) -> bool:
    """Serve the console when the admin API is on; returns whether it was mounted."""
    if not settings.admin_token:
        return False
    app.state.console = Console(
        codec=SessionCodec(
            signing_key(admin_token=settings.admin_token, console_secret=settings.console_secret),
            ttl_s=settings.console_session_ttl_s,
            clock=clock,
        ),
        templates=build_templates(),
    )
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(console_router())
    app.add_exception_handler(ConsoleRefusal, refusal_handler)
    return True
