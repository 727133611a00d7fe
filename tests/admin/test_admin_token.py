from __future__ import annotations

import dataclasses

import httpx
import pytest

from tests.admin.conftest import AdminTestGateway, assert_error, build_admin_app

pytestmark = pytest.mark.anyio


def _client(gateway: AdminTestGateway, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_admin_app(gateway))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "test-admin-token", "Basic test-admin-token"]
)
async def test_missing_or_wrong_token_is_401(
    gateway: AdminTestGateway, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with _client(gateway, **headers) as client:
        for method, path in [("GET", "/admin/v1/accounts"), ("POST", "/admin/v1/keys/x/revoke")]:
            response = await client.request(method, path)
            assert_error(response, 401, "INVALID_ADMIN_TOKEN")
            assert response.json()["error"]["type"] == "authentication_error"


async def test_the_admin_api_is_off_without_a_token(gateway: AdminTestGateway) -> None:
    settings = gateway.settings.model_copy(update={"admin_token": None})
    off = dataclasses.replace(gateway, settings=settings)
    async with _client(off, Authorization="Bearer anything") as client:
        for method, path in [
            ("GET", "/admin/v1/accounts"),
            ("POST", "/admin/v1/accounts"),
            ("GET", "/admin/v1/usage"),
        ]:
            assert_error(await client.request(method, path), 404, "NOT_FOUND")


async def test_the_right_token_is_accepted(gateway: AdminTestGateway) -> None:
    async with _client(gateway, Authorization="Bearer test-admin-token") as client:
        response = await client.get("/admin/v1/accounts")
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": [], "next_cursor": None}


@pytest.mark.parametrize(("token", "status"), [("real-token", 200), (None, 404)])
async def test_the_application_mounts_the_admin_api(
    database_url: str, token: str | None, status: int
) -> None:
    from pathlib import Path

    from app.main import create_app
    from app.settings import Settings

    catalog = Path(__file__).parents[2] / "config" / "models.yaml"
    settings = Settings(
        DATABASE_URL=database_url, GATEWAY_ADMIN_TOKEN=token, GATEWAY_CONFIG=catalog
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        _client_for(app, Authorization="Bearer real-token") as client,
    ):
        response = await client.get("/admin/v1/accounts")
    assert response.status_code == status, response.text


def _client_for(app: object, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers)
