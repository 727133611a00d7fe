"""`/healthz`, `/readyz` and `/metrics`: what orchestrators and Prometheus call (SPEC 8).

    /healthz   200 while the process runs: no I/O, never depends on the database
    /readyz    200 {"status": "ready"}, or 503 {"status": "not_ready", "reasons": [...]}
    /metrics   Prometheus text (every worker's values when PROMETHEUS_MULTIPROC_DIR is set),
               behind `Authorization: Bearer $GATEWAY_METRICS_TOKEN` when that is set

None of them is in the OpenAPI document (they are not part of the client API) and none is
counted in the request metrics or the access log.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.errors import AuthenticationError
from app.observability.metrics import exposition
from app.observability.readiness import not_ready_reasons
from app.settings import Settings

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    gateway: Any = getattr(request.app.state, "gateway", None)
    if gateway is None:
        reasons = await not_ready_reasons(None, None)
    else:
        reasons = await not_ready_reasons(gateway.catalog, gateway.engine)
    if reasons:
        body = {"status": "not_ready", "reasons": reasons}
        return Response(orjson.dumps(body), status_code=503, media_type="application/json")
    return Response(orjson.dumps({"status": "ready"}), media_type="application/json")


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if settings.metrics_token is not None:
        _check_bearer(request.headers.get("authorization"), settings.metrics_token)
    # off the loop: merging every worker's files is file I/O and a few ms of parsing
    body, content_type = await run_in_threadpool(exposition, settings.prometheus_multiproc_dir)
    return Response(body, media_type=content_type)


def _check_bearer(header: str | None, token: str) -> None:
    scheme, _, credential = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credential.strip().encode(), token.encode()
    ):
        raise AuthenticationError(
            "GET /metrics needs `Authorization: Bearer <GATEWAY_METRICS_TOKEN>`.",
            code="INVALID_METRICS_TOKEN",
        )
