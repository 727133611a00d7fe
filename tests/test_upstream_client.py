"""The shared upstream client, over real loopback HTTP, on each transport it can run with.

No cookie jar, no per-call environment reads, counted calls; and the failure vocabulary the
adapters rely on: a refused connection is "unavailable" (503), a silent server "timed out"
(504), an answer past its limit a 502, whichever client (aiohttp directly, or httpx) runs.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from app.adapters.upstream_http import read_limited, transport_errors
from app.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from app.settings import Settings
from app.upstream_client import AiohttpUpstream, UpstreamHttp, make_http_client, upstream_occupancy

pytestmark = pytest.mark.anyio

TRANSPORTS = ["aiohttp", "httpx"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        response = web.json_response(
            {
                "cookie": request.headers.get("cookie"),
                "content_type": request.headers.get("content-type"),
                "query": dict(request.query),
                "body": body.decode("latin-1"),
            }
        )
        response.set_cookie("session", "from-provider-a")
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse it up front
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"x" * 1024)
        await response.write_eof()
        return response

    async def declared(request: web.Request) -> web.Response:
        return web.Response(body=b"y" * 4096)

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/echo"})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/slow", slow)
    app.router.add_get("/big", big)
    app.router.add_get("/declared", declared)
    app.router.add_get("/redirect", redirect)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture(params=TRANSPORTS)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamHttp]:
    http = make_http_client(Settings(upstream_transport=request.param))
    try:
        yield http
    finally:
        await http.aclose()


def refused_url() -> str:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/refused"


async def fetch(http: UpstreamHttp, url: str, *, limit: int = 1 << 20, **kwargs: object) -> bytes:
    """What every adapter does: one call through the mapping boundary, body size-limited."""
    with transport_errors("the-host", 0.5):
        async with http.stream("GET", url, timeout=0.5, **kwargs) as response:  # type: ignore[arg-type]
            return await read_limited(response, limit, what="answer")


async def test_cookies_set_by_one_answer_are_never_sent_again(
    server: str, client: UpstreamHttp
) -> None:
    async with client.stream("GET", f"{server}/echo", timeout=5) as first:
        assert first.headers.get("Set-Cookie", "").startswith("session=")
        await read_limited(first, 1 << 20, what="answer")
    assert (
        httpx.Response(200, content=await fetch(client, f"{server}/echo")).json()["cookie"] is None
    )


async def test_json_params_and_multipart_are_encoded_as_httpx_would(
    server: str, client: UpstreamHttp
) -> None:
    async with client.stream(
        "POST", f"{server}/echo", params={"api-version": "2"}, json={"a": 1}, timeout=5
    ) as response:
        answer = httpx.Response(200, content=await read_limited(response, 1 << 20, what="a"))
    assert answer.json()["content_type"] == "application/json"
    assert answer.json()["query"] == {"api-version": "2"}
    assert answer.json()["body"].replace(" ", "") == '{"a":1}'

    files = [("image", ("a.png", b"\x89PNG-bytes", "image/png"))]
    async with client.stream(
        "POST", f"{server}/echo", data={"prompt": "hi"}, files=files, timeout=5
    ) as response:
        answer = httpx.Response(200, content=await read_limited(response, 1 << 20, what="a"))
    echoed = answer.json()
    assert echoed["content_type"].startswith("multipart/form-data; boundary=")
    assert 'name="prompt"\r\n\r\nhi' in echoed["body"]
    assert 'filename="a.png"' in echoed["body"] and "\x89PNG-bytes" in echoed["body"]


async def test_redirects_are_answered_not_followed(server: str, client: UpstreamHttp) -> None:
    async with client.stream("GET", f"{server}/redirect", timeout=5) as response:
        assert response.status_code == 302
        assert response.is_redirect and not response.is_success
        assert response.headers["location"] == "/echo"


async def test_a_refused_connection_is_unavailable_not_a_timeout(client: UpstreamHttp) -> None:
    with pytest.raises(UpstreamUnavailable, match="cannot reach the-host") as caught:
        await fetch(client, refused_url())
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_a_silent_server_is_a_timeout(server: str, client: UpstreamHttp) -> None:
    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.5 s") as caught:
        await fetch(client, f"{server}/slow")
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)


@pytest.mark.parametrize("path", ["/big", "/declared"])
async def test_an_answer_past_its_limit_is_refused(
    server: str, client: UpstreamHttp, path: str
) -> None:
    with pytest.raises(UpstreamError, match="limit"):
        await fetch(client, f"{server}{path}", limit=2048)
    # the connection cut short is not handed to the next call
    assert (
        httpx.Response(200, content=await fetch(client, f"{server}/echo")).json()["cookie"] is None
    )


async def test_a_connection_reset_mid_answer_is_unavailable() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for transport in TRANSPORTS:
            http = make_http_client(Settings(upstream_transport=transport))
            try:
                with pytest.raises(UpstreamUnavailable, match="cannot reach"):
                    await fetch(http, f"http://127.0.0.1:{port}/")
            finally:
                await http.aclose()
    finally:
        server.close()
        await server.wait_closed()


async def test_environment_is_read_only_when_a_proxy_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)

    assert Settings().upstream_proxy_from_env is False
    http = make_http_client(Settings())
    assert isinstance(http, AiohttpUpstream)
    assert http.session()._trust_env is False
    await http.aclose()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert Settings().upstream_proxy_from_env is True
    http = make_http_client(Settings())
    assert isinstance(http, AiohttpUpstream)
    assert http.session()._trust_env is True
    await http.aclose()


async def test_calls_in_flight_are_counted_until_their_body_is_closed(server: str) -> None:
    http = make_http_client(Settings(upstream_max_connections=1))
    try:
        occupancy = upstream_occupancy(http)
        assert occupancy is not None and occupancy.size == 1
        async with http.stream("GET", f"{server}/echo", timeout=5) as response:
            assert occupancy.active == 1 and occupancy.waiting() == 0
            await read_limited(response, 1 << 20, what="answer")
        assert occupancy.active == 0
        await fetch(http, f"{server}/echo")
        assert occupancy.active == 0
        with pytest.raises(UpstreamUnavailable):
            await fetch(http, refused_url())
        assert occupancy.active == 0
        with pytest.raises(UpstreamError):
            await fetch(http, f"{server}/big", limit=10)
        assert occupancy.active == 0
    finally:
        await http.aclose()
