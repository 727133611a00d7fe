"""Dependencies of the public API, as `Annotated` aliases (`GatewayDep`, `CurrentKey`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import PayloadTooLarge
from app.gateway import Gateway
from app.keys.auth import AuthenticatedKey
from app.security.throttle import client_address


async def get_gateway(request: Request) -> Gateway:
    # async on purpose: FastAPI runs plain `def` dependencies in a worker thread
    gateway: Gateway = request.app.state.gateway
    return gateway


async def get_current_key(request: Request) -> AuthenticatedKey:
    gateway: Gateway = request.app.state.gateway
    return await gateway.authenticator.authenticate(
        request.headers.get("authorization"), address=client_address(request)
    )


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
CurrentKey = Annotated[AuthenticatedKey, Depends(get_current_key)]


async def read_body(request: Request, limit: int) -> bytearray:
    """The whole body, refusing (413) past `limit` bytes without reading the rest.

    A declared Content-Length over the limit is refused before a byte is read; the bytes
    actually received are counted as they arrive (a client may send no length, or lie), and
    go straight into one growing buffer: no list of chunks joined into a second copy.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        body += chunk
    return body


def request_ids(request: Request) -> tuple[str, str | None]:
    state = request.scope.get("state", {})
    return state["request_id"], state.get("client_request_id")
