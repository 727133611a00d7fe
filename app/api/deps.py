"""Dependencies of the public API, as `Annotated` aliases (`GatewayDep`, `CurrentKey`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.body import LimitedBody
from app.gateway import Gateway
from app.keys.auth import AuthenticatedKey
from app.observability.facts import note_key
from app.security.throttle import client_address


async def get_gateway(request: Request) -> Gateway:
    # async on purpose: FastAPI runs plain `def` dependencies in a worker thread
    gateway: Gateway = request.app.state.gateway
    return gateway


async def get_current_key(request: Request) -> AuthenticatedKey:
    gateway: Gateway = request.app.state.gateway
    key = await gateway.authenticator.authenticate(
        request.headers.get("authorization"), address=client_address(request)
    )
    note_key(key_id=key.key_id, account_id=key.account_id)
    return key


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
CurrentKey = Annotated[AuthenticatedKey, Depends(get_current_key)]


async def read_body(request: Request, limit: int) -> bytearray:
    """The whole body, refusing (413) past `limit` bytes without reading the rest.

    A declared Content-Length over the limit is refused before a byte is read; the bytes
    actually received are counted as they arrive (a client may send no length, or lie), and
    go straight into one growing buffer: no list of chunks joined into a second copy.
    """
    body = bytearray()
    async for chunk in LimitedBody(request, limit):
        body += chunk
    return body


def request_ids(request: Request) -> tuple[str, str | None]:
    state = request.scope.get("state", {})
    return state["request_id"], state.get("client_request_id")
