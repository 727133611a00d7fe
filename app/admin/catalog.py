"""`POST /admin/v1/catalog/reload`: re-read the catalog file into the running gateway.

The same reload as SIGHUP (`app.catalog.reload`), with an answer: 200 with the models now in
force and what changed, or 400 `CATALOG_INVALID` naming the file, field and problem, in which
case nothing changed and the old catalog keeps serving.

Which processes reload: the one that answers, and, under `serve --workers N`, every sibling
worker too (the answering worker asks the supervisor, which forwards SIGHUP to all of them,
exactly as a SIGHUP from the operator would). Separate replicas (containers, pods) are separate
servers: reload each, or roll them (docs/deployment.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.catalog.reload import CatalogReloader, CatalogReloadRefused, ask_supervisor_to_reload
from app.errors import InvalidRequest
from app.settings import Settings

#: included by the admin router (`app.admin.endpoints`): its prefix and admin-token guard apply
router = APIRouter()


class ReloadingGateway(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def reloader(self) -> CatalogReloader: ...


class CatalogReloadOut(BaseModel):
    object: Literal["catalog.reload"] = "catalog.reload"
    path: Path
    #: the visible models now in force, in file order
    models: list[str]
    added: list[str]
    removed: list[str]
    warnings: list[str]
    #: true when the sibling workers of `serve --workers N` were asked to reload as well
    workers_signalled: bool


@router.post("/catalog/reload")
async def reload_catalog(request: Request) -> CatalogReloadOut:
    gateway: ReloadingGateway = request.app.state.gateway
    try:
        report = await gateway.reloader.reload()
    except CatalogReloadRefused as exc:
        raise InvalidRequest(
            f"The catalog was not reloaded; the one in force keeps serving. {exc}",
            code="CATALOG_INVALID",
        ) from None
    return CatalogReloadOut(
        path=report.path,
        models=report.models,
        added=report.added,
        removed=report.removed,
        warnings=report.warnings,
        workers_signalled=ask_supervisor_to_reload(gateway.settings.supervisor_pid),
    )
