"""`/openapi.json` that tells the truth, and the Swagger UI page at `/docs`, served offline.

FastAPI's document is the starting point; then, once per process:

    routes ──FastAPI──▶ paths, admin schemas (their pydantic response models)
        + request bodies of the image routes      (`app.api.schemas`, declared on the routes)
        + the error responses each route can give  (`error_responses`, the one error object)
        - 422 and its validation schemas           (never sent: validation errors are 400s)
        - `null` as a value of optional parameters (absent or a value: `anyOf [X, null]` is X)
        + security: bearer `ApiKey` on /v1, bearer `AdminToken` on /admin/v1

The admin routes are in the document only when the admin API is on (`create_app` includes
them with `include_in_schema` accordingly). Swagger UI's assets are vendored from the npm
package `swagger-ui-dist` (`scripts/vendor-swagger-ui`, Apache-2.0, licence alongside) and
served from `/docs/assets`, so the page works without reaching any CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from app.api.schemas import (
    ErrorResponse,
    ImageEditForm,
    ImageEditJsonRequest,
    ImageGenerationRequest,
)

SWAGGER_UI_VERSION: Final = "5.35.0"
SWAGGER_UI_ASSETS: Final = Path(__file__).resolve().parents[1] / "static" / "swagger-ui"
DOCS_ASSETS_PATH: Final = "/docs/assets"

_ERRORS: Final[dict[int, str]] = {
    400: "Malformed body, bad value (`param` names the field), unknown model, bad image",
    401: "Missing, malformed or unknown key (or admin token)",
    402: "Balance or the key's budget below the request's price",
    403: "Key revoked or expired, model not allowed, account suspended",
    404: "No such resource",
    409: "Idempotency-Key reused with another body, or still in progress; state conflict",
    413: "Request or image over the size limits",
    429: "Over the key's rpm or concurrency, or too many failed authentications",
    502: "The provider failed or answered something unusable",
    503: "Every route of the model is down, or the gateway's database is",
    504: "The provider exceeded the model's timeout",
}
_RETRY_AFTER: Final = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer"},
    }
}
_SHOULD_RETRY: Final = {
    "x-should-retry": {
        "description": "false when a retry cannot succeed",
        "schema": {"type": "string", "enum": ["false"]},
    }
}

#: the request bodies the image routes read themselves
IMAGE_BODY_MODELS: Final[tuple[type[BaseModel], ...]] = (
    ImageGenerationRequest,
    ImageEditJsonRequest,
    ImageEditForm,
)
SECURITY_SCHEMES: Final = {
    "ApiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (sk-...): Authorization: Bearer sk-...",
    },
    "AdminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "GATEWAY_ADMIN_TOKEN: Authorization: Bearer <token>",
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for these statuses, each with the one error object."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        headers: dict[str, Any] = {}
        if status in (429, 503):
            headers.update(_RETRY_AFTER)
        if 400 <= status < 500 and status not in (409, 429):
            headers.update(_SHOULD_RETRY)
        responses[status] = {"model": ErrorResponse, "description": _ERRORS[status]}
        if headers:
            responses[status]["headers"] = headers
    return responses


def body_ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build_document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    _, defs = models_json_schema(
        [(model, "validation") for model in IMAGE_BODY_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    schemas.update(defs.get("$defs", {}))
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"].pop("422", None)
            for parameter in operation.get("parameters", ()):
                _not_nullable(parameter)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in document["paths"].items():
        scheme = "AdminToken" if path.startswith("/admin/") else "ApiKey"
        for operation in operations.values():
            operation["security"] = [{scheme: []}]
    return document


def _not_nullable(parameter: dict[str, Any]) -> None:
    """An optional query or path parameter is absent or a value, never JSON null (a query
    string cannot carry one): FastAPI's `anyOf: [X, {type: null}]` for `X | None` becomes X,
    keeping the title and description."""
    schema = parameter.get("schema", {})
    options = schema.get("anyOf")
    if not isinstance(options, list):
        return
    kept = [option for option in options if option != {"type": "null"}]
    if len(kept) == 1 and len(kept) < len(options):
        del schema["anyOf"]
        schema.update(kept[0])


def install_openapi(app: FastAPI) -> None:
    """`/openapi.json` from `build_document` (built once), `/docs` with local assets."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=SWAGGER_UI_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_PATH}/favicon-32x32.png",
        )
