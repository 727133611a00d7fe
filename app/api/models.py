"""`GET /v1/models` and `GET /v1/models/{id}`, scoped to what the caller's key may use.

Entries are precomputed at catalog load (`CompiledModel.public`), so listing is a filter and
one serialisation. Ids may contain `/` (the path converter takes the rest of the path, and
`%2F` arrives decoded).
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import CurrentKey, GatewayDep
from app.api.openapi import error_responses
from app.api.schemas import ModelEntry, ModelList
from app.errors import NotFound

router = APIRouter(prefix="/v1", tags=["models"], responses=error_responses(401, 403, 429, 503))


@router.get("/models", responses={200: {"model": ModelList, "description": "The models"}})
async def list_models(gateway: GatewayDep, key: CurrentKey) -> Response:
    data = [
        m.public if name == m.id else {**m.public, "id": name}
        for name, m in gateway.catalog.listed(key.account_id)
        if key.allows(name) or key.allows(m.id)
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


@router.get(
    "/models/{model_id:path}",
    responses={
        200: {"model": ModelEntry, "description": "The model"},
        **error_responses(404),
    },
)
async def get_model(model_id: str, gateway: GatewayDep, key: CurrentKey) -> Response:
    model = gateway.catalog.get(model_id, key.account_id)
    if model is None or not (key.allows(model_id) or key.allows(model.id)):
        raise NotFound(
            f"The model '{model_id}' does not exist.", code="MODEL_NOT_FOUND", param="model"
        )
    entry = model.public if model_id == model.id else {**model.public, "id": model_id}
    return Response(orjson.dumps(entry), media_type="application/json")
