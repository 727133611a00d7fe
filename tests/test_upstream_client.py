"""The shared upstream client: no cookie jar, no per-call environment reads, counted calls."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from app.settings import Settings
from app.upstream_client import make_http_client, upstream_occupancy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        response = web.json_response({"cookie": request.headers.get("cookie")})
        response.set_cookie("session", "from-provider-a")
        return response

    app = web.Application()
    app.router.add_get("/echo", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_cookies_set_by_one_answer_are_never_sent_again(server: str, transport: str) -> None:
    settings = Settings(upstream_transport=transport)
    async with make_http_client(settings) as client:
        first = await client.get(f"{server}/echo")
        assert first.headers.get("set-cookie", "").startswith("session=")
        second = await client.get(f"{server}/echo")
        assert second.json() == {"cookie": None}
        assert not client.cookies


async def test_environment_is_read_only_when_a_proxy_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    assert Settings().upstream_proxy_from_env is False
    async with make_http_client(Settings()) as client:
        assert client._transport.get_client()._trust_env is False  # type: ignore[attr-defined]
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert Settings().upstream_proxy_from_env is True
    async with make_http_client(Settings()) as client:
        assert client._transport.get_client()._trust_env is True  # type: ignore[attr-defined]


async def test_calls_in_flight_are_counted_until_their_body_is_closed(server: str) -> None:
    async with make_http_client(Settings(upstream_max_connections=1)) as client:
        occupancy = upstream_occupancy(client)
        assert occupancy is not None and occupancy.size == 1
        async with client.stream("GET", f"{server}/echo") as response:
            assert occupancy.active == 1 and occupancy.waiting() == 0
            await response.aread()
        assert occupancy.active == 0
        await client.get(f"{server}/echo")
        assert occupancy.active == 0
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:1/refused")
        assert occupancy.active == 0
