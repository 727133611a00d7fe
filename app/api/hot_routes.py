"""Pure-ASGI middleware: the hot routes, served without FastAPI's per-request machinery.

    RequestIdMiddleware ─▶ ObservabilityMiddleware ─▶ HotRoutes ─┬─▶ endpoint(Request)
                                                                  └─▶ FastAPI's router (the rest)

`POST /v1/images/generations` is most of the traffic, and at 64 px the framework was a tenth
of the gateway's CPU per request: the exception and exit-stack middlewares, matching the path
against every route, `request_response`'s wrappers and the dependency solver, per request.
This middleware, the innermost, answers an exact (method, path) pair by calling its endpoint
directly; the endpoint resolves its dependencies by hand (`app.api.images.serve_generation`:
the same functions `Depends` would call, then the same route function). The route stays
declared on FastAPI's router, which documents it (OpenAPI) and would serve it unchanged
without this middleware. Anything else (another method, a trailing slash, a mounted prefix)
falls through to FastAPI.

Exceptions are answered as Starlette's exception middleware would (`handled_response`, the
same handler table); what that table does not handle propagates to the outer error
middleware, exactly as from a FastAPI route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import handled_response

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    def __init__(self, app: ASGIApp, *, routes: Mapping[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                request = Request(scope, receive, send)
                try:
                    response = await endpoint(request)
                except Exception as exc:
                    handled = await handled_response(request, exc)
                    if handled is None:
                        raise
                    response = handled
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
