"""`POST /v1/images/generations` and `/edits`: thin HTTP shells around `ImageService`."""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.deps import (
    CurrentKey,
    GatewayDep,
    get_current_key,
    get_gateway,
    read_body,
    request_ids,
)
from app.api.json_edit import read_edit_json
from app.api.multipart import read_edit_form
from app.api.openapi import body_ref, error_responses
from app.api.schemas import (
    ImageEditForm,
    ImageEditJsonRequest,
    ImageGenerationRequest,
    ImagesResponse,
)
from app.api.streaming import ImageEventResponse
from app.images.results import ResponseBody
from app.images.service import CallContext, Endpoint, Result
from app.images.streaming import ImageEventStream
from app.keys.auth import AuthenticatedKey

router = APIRouter(
    prefix="/v1",
    tags=["images"],
    responses=error_responses(400, 401, 402, 403, 409, 413, 429, 502, 503, 504),
)

#: a generation body is a prompt and a few fields; edits (multipart) have their own limit
MAX_JSON_BODY_BYTES = 2 * 1024 * 1024


#: 200: the images as JSON, or (`stream: true`) their events
IMAGES_ANSWER: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "model": ImagesResponse,
        "description": "The images; with stream: true, server-sent events",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
_IDEMPOTENCY_KEY: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a repeat within 24 h returns the stored answer, not charged again",
    "schema": {"type": "string", "maxLength": 255},
}


@router.post(
    "/images/generations",
    responses=IMAGES_ANSWER,
    openapi_extra={
        "parameters": [_IDEMPOTENCY_KEY],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": body_ref(ImageGenerationRequest)}},
        },
    },
)
async def create_generation(request: Request, gateway: GatewayDep, key: CurrentKey) -> Response:
    limit = min(MAX_JSON_BODY_BYTES, gateway.settings.max_request_bytes)
    raw = bytes(await read_body(request, limit))  # small; kept for the Idempotency-Key hash
    ctx = call_context(request, key, "generations")
    return respond(await gateway.images.generate(ctx, raw))


async def serve_generation(request: Request) -> Response:
    """`create_generation` with its dependencies resolved by hand, the same functions in the
    same order as `Depends`: the hot route (`app.api.hot_routes`)."""
    gateway = await get_gateway(request)
    key = await get_current_key(request)
    return await create_generation(request, gateway, key)


@router.post(
    "/images/edits",
    responses=IMAGES_ANSWER,
    openapi_extra={
        "parameters": [_IDEMPOTENCY_KEY],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": body_ref(ImageEditForm)},
                "application/json": {"schema": body_ref(ImageEditJsonRequest)},
            },
        },
    },
)
async def create_edit(request: Request, gateway: GatewayDep, key: CurrentKey) -> Response:
    """Multipart as the SDKs send it, or a JSON body with `images: [{"image_url": ...}]`."""
    settings = gateway.settings
    read = (
        read_edit_form
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data")
        else read_edit_json
    )
    upload = await read(
        request,
        max_request_bytes=settings.max_request_bytes,
        max_image_bytes=settings.max_image_bytes,
    )
    ctx = call_context(request, key, "edits")
    return respond(await gateway.images.edit(ctx, upload))


def call_context(request: Request, key: AuthenticatedKey, endpoint: Endpoint) -> CallContext:
    request_id, client_request_id = request_ids(request)
    return CallContext(
        key=key,
        request_id=request_id,
        client_request_id=client_request_id,
        idempotency_key=request.headers.get("idempotency-key") or None,
        path=request.url.path,
        endpoint=endpoint,
    )


class PiecewiseResponse(Response):
    """A rendered body written as its pieces (`ResponseBody.chunks`), never joined: the server
    waits for each to drain before taking the next, so a multi-megabyte image is not copied
    whole into the socket's send buffer. Headers as `Response` sends them."""

    def __init__(self, body: ResponseBody, *, status_code: int, media_type: str) -> None:
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.body = b""  # never read: `pieces` is what is sent
        self.pieces = body
        self.init_headers({"content-length": str(len(body))})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        for chunk in self.pieces.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def respond(result: Result) -> Response:
    if isinstance(result, ImageEventStream):
        return ImageEventResponse(result)
    body, status_code, media_type = result.body, result.status_code, result.media_type
    if isinstance(body, ResponseBody):
        return PiecewiseResponse(body, status_code=status_code, media_type=media_type)
    return Response(body, status_code=status_code, media_type=media_type)
