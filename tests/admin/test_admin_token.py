from __future__ import annotations

import dataclasses

import httpx
import pytest

from app.security.throttle import FailureThrottle
from tests.admin.conftest import ADMIN_TOKEN, AdminTestGateway, assert_error, build_admin_app
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio


def _client(gateway: AdminTestGateway, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_admin_app(gateway))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", ADMIN_TOKEN, f"Basic {ADMIN_TOKEN}"]
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
    async with _client(gateway, Authorization=f"Bearer {ADMIN_TOKEN}") as client:
        response = await client.get("/admin/v1/accounts")
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": [], "next_cursor": None}


@pytest.mark.parametrize(("token", "status"), [(ADMIN_TOKEN, 200), (None, 404)])
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
        _client_for(app, Authorization=f"Bearer {ADMIN_TOKEN}") as client,
    ):
        response = await client.get("/admin/v1/accounts")
    assert response.status_code == status, response.text


def _client_for(app: object, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers)


async def test_failed_admin_tokens_are_throttled_per_address(gateway: AdminTestGateway) -> None:
    clock = FakeClock()
    throttled = dataclasses.replace(
        gateway,
        admin_throttle=FailureThrottle(what="admin token", burst=3, refill_s=20, clock=clock),
    )
    async with _client(throttled, Authorization="Bearer " + "x" * 40) as client:
        for _ in range(3):
            assert_error(await client.get("/admin/v1/accounts"), 401, "INVALID_ADMIN_TOKEN")
        refused = await client.get("/admin/v1/accounts")
        assert_error(refused, 429, "RATE_LIMITED")
        assert refused.headers["retry-after"] == "20"
        # while throttled, even the right token waits: guessing gains nothing
        right = await client.get(
            "/admin/v1/accounts", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert_error(right, 429, "RATE_LIMITED")
        clock.advance(20)
        right = await client.get(
            "/admin/v1/accounts", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert right.status_code == 200


@pytest.mark.parametrize("token", ["short", "x" * 31])
def test_a_short_admin_token_is_refused_at_start_up(token: str) -> None:
    from pydantic import ValidationError

    from app.settings import Settings

    with pytest.raises(ValidationError, match="GATEWAY_ADMIN_TOKEN must be at least 32"):
        Settings(GATEWAY_ADMIN_TOKEN=token)
    assert Settings(GATEWAY_ADMIN_TOKEN="").admin_token is None
    assert Settings(GATEWAY_ADMIN_TOKEN="y" * 32).admin_token == "y" * 32
