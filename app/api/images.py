"""`POST /v1/images/generations` and `/edits`: thin HTTP shells around `ImageService`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.deps import CurrentKey, GatewayDep, read_body, request_ids
from app.api.streaming import ImageEventResponse
from app.images.service import CallContext, ImageService, Result
from app.images.streaming import ImageEventStream

router = APIRouter(prefix="/v1", tags=["images"])

#: a generation body is a prompt and a few fields; edits (multipart) have their own limit
MAX_JSON_BODY_BYTES = 2 * 1024 * 1024


@router.post("/images/generations")
async def create_generation(request: Request, gateway: GatewayDep, key: CurrentKey) -> Response:
    raw = await read_body(request, min(MAX_JSON_BODY_BYTES, gateway.settings.max_request_bytes))
    request_id, client_request_id = request_ids(request)
    ctx = CallContext(
        key=key,
        request_id=request_id,
        client_request_id=client_request_id,
        idempotency_key=request.headers.get("idempotency-key") or None,
        path=request.url.path,
    )
    return respond(await ImageService(gateway).generate(ctx, raw))


def respond(result: Result) -> Response:
    if isinstance(result, ImageEventStream):
        return ImageEventResponse(result)
    return Response(result.body, status_code=result.status_code, media_type=result.media_type)
