"""Dependencies of the public API, as `Annotated` aliases (`GatewayDep`, `CurrentKey`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import PayloadTooLarge
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


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) past `limit` bytes without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def request_ids(request: Request) -> tuple[str, str | None]:
    state = request.scope.get("state", {})
    return state["request_id"], state.get("client_request_id")
