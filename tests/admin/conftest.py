"""A small FastAPI app with only the admin router, wired like the real one.

It includes `app.admin.endpoints.router`, the application's own error handlers, and an
`app.state.gateway` holding just what the admin API uses (`AdminGateway`), built on the
per-test database. The real app (`app.main.create_app`) mounts the same router.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admin.endpoints import router
from app.api.errors import register_error_handlers
from app.keys.auth import KeyAuthenticator
from app.keys.service import KeyService
from app.ledger.idempotency import IdempotencyStore
from app.ledger.service import Ledger
from app.security.throttle import FailureThrottle
from app.settings import Settings

ADMIN_TOKEN = "test-admin-token-0123456789abcdefghijkl"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class AdminTestGateway:
    settings: Settings
    engine: AsyncEngine
    ledger: Ledger
    keys: KeyService
    authenticator: KeyAuthenticator
    idempotency: IdempotencyStore
    admin_throttle: FailureThrottle


def build_admin_app(gateway: AdminTestGateway) -> FastAPI:
    app = FastAPI()
    register_error_handlers(app)
    app.include_router(router)
    app.state.gateway = gateway
    return app


@pytest.fixture
def gateway(database_url: str, engine: AsyncEngine) -> AdminTestGateway:
    settings = Settings(DATABASE_URL=database_url, GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN)
    return AdminTestGateway(
        settings=settings,
        engine=engine,
        ledger=Ledger(engine),
        keys=KeyService(engine),
        authenticator=KeyAuthenticator(engine, ttl_s=3600),
        idempotency=IdempotencyStore(engine),
        admin_throttle=FailureThrottle(what="admin token", burst=100, refill_s=1),
    )


@pytest.fixture
async def client(gateway: AdminTestGateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_admin_app(gateway))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=AUTH
    ) as client:
        yield client


async def create_account(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/admin/v1/accounts", json={"name": "acme", **body})
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


async def create_key(client: httpx.AsyncClient, account_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(
        f"/admin/v1/accounts/{account_id}/keys", json={"name": "ci", **body}
    )
    assert response.status_code == 201, response.text
    key: dict[str, Any] = response.json()
    return key


def assert_error(
    response: httpx.Response, status: int, code: str, param: str | None = None
) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
