"""Admin API for webhooks (`/admin/v1/webhooks/...`), behind the same admin-token guard.

POST   /webhooks/endpoints                {url, event_types, description?, account_id?,
                                           enabled?}  201, with the `secret` (only here
                                           and on a secret rotation)
GET    /webhooks/endpoints                list (cursor-paginated), never the secret
GET    /webhooks/endpoints/{id}
PATCH  /webhooks/endpoints/{id}           {url?, event_types?, description?, enabled?,
                                           rotate_secret?}
DELETE /webhooks/endpoints/{id}
POST   /webhooks/endpoints/{id}/test      sends a `webhook.test` event now; the delivery
GET    /webhooks/deliveries?endpoint_id=&state=   newest first: status, attempts, last error
GET    /webhooks/deliveries/{id}
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, StringConstraints

from app.admin.deps import (
    DEFAULT_PAGE_SIZE,
    Cursor,
    Limit,
    reject_unknown_query,
    require_admin,
)
from app.admin.schemas import AdminRequest, Page
from app.api.openapi import error_responses
from app.webhooks.repository import DeliveryRecord, EndpointRecord
from app.webhooks.service import WebhookService

router = APIRouter(
    prefix="/admin/v1/webhooks",
    tags=["admin"],
    dependencies=[Depends(require_admin), Depends(reject_unknown_query)],
    responses=error_responses(400, 401, 404, 429, 503),
)

Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Description = Annotated[str, StringConstraints(max_length=500)]
AccountId = Annotated[str, StringConstraints(min_length=1, max_length=40)]
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def get_webhooks(request: Request) -> WebhookService:
    service: WebhookService = request.app.state.gateway.webhooks
    return service


WebhooksDep = Annotated[WebhookService, Depends(get_webhooks)]


class EndpointCreate(AdminRequest):
    url: Url
    event_types: list[str]
    description: Description | None = None
    account_id: AccountId | None = None
    enabled: bool = True


class EndpointUpdate(AdminRequest):
    url: Url | None = None
    event_types: list[str] | None = None
    description: Description | None = None
    enabled: bool | None = None
    #: true: a new signing secret, returned once in this answer; the old one stops at once
    rotate_secret: bool = False


class EndpointOut(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    url: str
    description: str | None
    event_types: list[str]
    account_id: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: EndpointRecord) -> Self:
        return cls(
            id=record.id,
            url=record.url,
            description=record.description,
            event_types=list(record.event_types),
            account_id=record.account_id,
            enabled=record.enabled,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class EndpointWithSecret(EndpointOut):
    #: `whsec_...`: verify deliveries with it (Standard Webhooks); shown only here
    secret: str

    @classmethod
    def with_secret(cls, record: EndpointRecord) -> Self:
        return cls(**EndpointOut.of(record).model_dump(), secret=record.secret)


class EndpointDeleted(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    deleted: Literal[True] = True


class DeliveryOut(BaseModel):
    object: Literal["webhook_delivery"] = "webhook_delivery"
    id: int
    #: the event's id, sent as `webhook-id` (the same on every attempt)
    event_id: str
    event_type: str
    endpoint_id: str
    #: pending | succeeded | failed
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, record: DeliveryRecord) -> Self:
        return cls(
            id=record.id,
            event_id=record.event_id,
            event_type=record.event_type,
            endpoint_id=record.endpoint_id,
            status=record.state,
            attempts=record.attempts,
            next_attempt_at=record.next_attempt_at if record.state == "pending" else None,
            last_attempt_at=record.last_attempt_at,
            last_status_code=record.last_status_code,
            last_error=record.last_error,
            created_at=record.created_at,
            finished_at=record.finished_at,
        )


@router.post("/endpoints", status_code=201)
async def create_endpoint(body: EndpointCreate, webhooks: WebhooksDep) -> EndpointWithSecret:
    record = await webhooks.create_endpoint(
        url=body.url,
        event_types=body.event_types,
        description=body.description,
        account_id=body.account_id,
        enabled=body.enabled,
    )
    return EndpointWithSecret.with_secret(record)


@router.get("/endpoints")
async def list_endpoints(
    webhooks: WebhooksDep, limit: Limit = DEFAULT_PAGE_SIZE, cursor: Cursor = None
) -> Page[EndpointOut]:
    records, next_cursor = await webhooks.list_endpoints(limit=limit, cursor=cursor)
    return Page(data=[EndpointOut.of(record) for record in records], next_cursor=next_cursor)


@router.get("/endpoints/{endpoint_id}")
async def get_endpoint(endpoint_id: str, webhooks: WebhooksDep) -> EndpointOut:
    return EndpointOut.of(await webhooks.get_endpoint(endpoint_id))


@router.patch("/endpoints/{endpoint_id}")
async def update_endpoint(
    endpoint_id: str, body: EndpointUpdate, webhooks: WebhooksDep
) -> EndpointOut | EndpointWithSecret:
    record = await webhooks.update_endpoint(
        endpoint_id,
        url=body.url,
        event_types=body.event_types,
        description=body.description,
        enabled=body.enabled,
        rotate_secret=body.rotate_secret,
    )
    if body.rotate_secret:
        return EndpointWithSecret.with_secret(record)
    return EndpointOut.of(record)


@router.delete("/endpoints/{endpoint_id}")
async def delete_endpoint(endpoint_id: str, webhooks: WebhooksDep) -> EndpointDeleted:
    await webhooks.delete_endpoint(endpoint_id)
    return EndpointDeleted(id=endpoint_id)


@router.post("/endpoints/{endpoint_id}/test")
async def test_endpoint(endpoint_id: str, webhooks: WebhooksDep) -> DeliveryOut:
    return DeliveryOut.of(await webhooks.test_send(endpoint_id))


@router.get("/deliveries")
async def list_deliveries(
    webhooks: WebhooksDep,
    endpoint_id: str | None = None,
    status: Literal["pending", "succeeded", "failed"] | None = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> Page[DeliveryOut]:
    records, next_cursor = await webhooks.list_deliveries(
        endpoint_id=endpoint_id, state=status, limit=limit, cursor=cursor
    )
    return Page(data=[DeliveryOut.of(record) for record in records], next_cursor=next_cursor)


@router.get("/deliveries/{delivery_id}")
async def get_delivery(delivery_id: DeliveryId, webhooks: WebhooksDep) -> DeliveryOut:
    return DeliveryOut.of(await webhooks.get_delivery(delivery_id))
