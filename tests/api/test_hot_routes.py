"""`HotRoutes`: exact (method, path) pairs served directly, errors answered like a route's."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from app.api.hot_routes import HotRoutes
from app.errors import InsufficientBalance
from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Inner:
    """The app behind the middleware (FastAPI's router, in the gateway)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(f"{scope['method']} {scope['path']}")
        await PlainTextResponse("from the router")(scope, receive, send)


async def hot(request: Request) -> Response:
    body = await request.body()
    if body == b"broke":
        raise InsufficientBalance("The account's balance is too low.")
    if body == b"bug":
        raise RuntimeError("a bug")
    return PlainTextResponse(f"hot {request.headers['x-who']} {body.decode()}")


def client(inner: Inner) -> httpx.AsyncClient:
    app = HotRoutes(inner, routes={("POST", "/v1/hot"): hot})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_the_exact_pair_is_served_by_its_endpoint_and_the_rest_by_the_router() -> None:
    inner = Inner()
    async with client(inner) as http:
        answer = await http.post("/v1/hot", content=b"hi", headers={"x-who": "me"})
        assert (answer.status_code, answer.text) == (200, "hot me hi")
        assert inner.paths == []
        for method, path in (("GET", "/v1/hot"), ("POST", "/v1/hot/"), ("POST", "/v1/other")):
            assert (await http.request(method, path)).text == "from the router"
    assert inner.paths == ["GET /v1/hot", "POST /v1/hot/", "POST /v1/other"]


async def test_a_gateway_error_is_answered_in_the_openai_shape() -> None:
    async with client(Inner()) as http:
        answer = await http.post("/v1/hot", content=b"broke")
    assert answer.status_code == 402
    assert answer.json()["error"]["code"] == "INSUFFICIENT_BALANCE"
    assert answer.json()["error"]["message"] == "The account's balance is too low."


async def test_an_unexpected_error_is_left_to_the_outer_error_middleware() -> None:
    async with client(Inner()) as http:
        with pytest.raises(RuntimeError, match="a bug"):
            await http.post("/v1/hot", content=b"bug")


def test_the_gateway_serves_generations_on_the_hot_route() -> None:
    app = create_app(Settings())
    hot_routes = [m for m in app.user_middleware if m.cls is HotRoutes]
    assert len(hot_routes) == 1
    assert ("POST", "/v1/images/generations") in hot_routes[0].kwargs["routes"]
    # innermost of the gateway's middleware: the request id and observability still wrap it
    assert app.user_middleware[-1].cls is HotRoutes
    # and still declared on the router, for the OpenAPI document
    assert "post" in app.openapi()["paths"]["/v1/images/generations"]
