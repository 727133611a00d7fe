"""Operators' webhook endpoints: create (the secret shown once), list, get, update, delete,
test-send, and the deliveries with their status, attempts and last error.

Endpoint rules (decisions where the issue is silent):
- `event_types`: a non-empty subset of `app.webhooks.events.EVENT_TYPES`; unknown names are a
  400 naming `event_types`.
- `account_id` (optional) narrows account events to one account; provider events go to every
  endpoint that subscribed to them.
- The URL is checked when saved (`app.webhooks.destinations`) and again before each attempt.
- Disabling an endpoint stops new deliveries to it; pending ones are still attempted (they
  were promised). Deleting it drops its pending deliveries; finished ones stay as history.
- test-send writes a `webhook.test` event with one delivery to that endpoint and attempts it
  at once, returning the delivery as it stands after that attempt (later retries follow the
  normal schedule).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import InvalidParameter, NotFound
from app.webhooks import events
from app.webhooks.destinations import DestinationPolicy, check_destination
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.outbox import OutboxRepository
from app.webhooks.repository import DeliveryRecord, EndpointRecord, WebhookRepository
from app.webhooks.signing import generate_secret

MAX_PAGE = 500
DELIVERY_STATES = ("pending", "succeeded", "failed")


def new_endpoint_id() -> str:
    return "whep_" + secrets.token_hex(12)


def endpoint_not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"No webhook endpoint with id {endpoint_id!r}", code="WEBHOOK_NOT_FOUND")


def check_event_types(names: Sequence[str]) -> list[str]:
    unknown = sorted(set(names) - set(events.EVENT_TYPES))
    if unknown:
        raise InvalidParameter(
            f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(events.EVENT_TYPES)}",
            param="event_types",
        )
    if not names:
        raise InvalidParameter("event_types must name at least one event", param="event_types")
    return sorted(set(names), key=events.EVENT_TYPES.index)


class WebhookService:
    def __init__(
        self, engine: AsyncEngine, dispatcher: Dispatcher, destinations: DestinationPolicy
    ) -> None:
        self._engine = engine
        self._dispatcher = dispatcher
        self._destinations = destinations

    async def create_endpoint(
        self,
        *,
        url: str,
        event_types: Sequence[str],
        description: str | None = None,
        account_id: str | None = None,
        enabled: bool = True,
    ) -> EndpointRecord:
        """A new endpoint; its record carries the signing secret (show it once)."""
        check_destination(url, self._destinations)
        types = check_event_types(event_types)
        endpoint_id = new_endpoint_id()
        now = self._dispatcher.now()
        async with self._engine.begin() as conn:
            repo = WebhookRepository(conn)
            await repo.insert_endpoint(
                {
                    "id": endpoint_id,
                    "url": url,
                    "description": description,
                    "event_types": types,
                    "account_id": account_id,
                    "secret": generate_secret(),
                    "enabled": enabled,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            record = await repo.get_endpoint(endpoint_id)
        assert record is not None
        return record

    async def get_endpoint(self, endpoint_id: str) -> EndpointRecord:
        async with self._engine.connect() as conn:
            record = await WebhookRepository(conn).get_endpoint(endpoint_id)
        if record is None:
            raise endpoint_not_found(endpoint_id)
        return record

    async def list_endpoints(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[EndpointRecord], str | None]:
        async with self._engine.connect() as conn:
            records = await WebhookRepository(conn).list_endpoints(
                limit=limit + 1, after_id=cursor or None
            )
        if len(records) > limit:
            return records[:limit], records[limit - 1].id
        return records, None

    async def update_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
        rotate_secret: bool = False,
    ) -> EndpointRecord:
        values: dict[str, object] = {}
        if url is not None:
            check_destination(url, self._destinations)
            values["url"] = url
        if event_types is not None:
            values["event_types"] = check_event_types(event_types)
        if description is not None:
            values["description"] = description
        if enabled is not None:
            values["enabled"] = enabled
        if rotate_secret:
            values["secret"] = generate_secret()
        if values:
            values["updated_at"] = self._dispatcher.now()
            async with self._engine.begin() as conn:
                if not await WebhookRepository(conn).update_endpoint(endpoint_id, values):
                    raise endpoint_not_found(endpoint_id)
        return await self.get_endpoint(endpoint_id)

    async def delete_endpoint(self, endpoint_id: str) -> None:
        async with self._engine.begin() as conn:
            if not await WebhookRepository(conn).delete_endpoint(endpoint_id):
                raise endpoint_not_found(endpoint_id)

    async def test_send(self, endpoint_id: str) -> DeliveryRecord:
        endpoint = await self.get_endpoint(endpoint_id)
        draft = events.EventDraft(
            events.TEST, {"endpoint_id": endpoint.id, "message": "test delivery"}
        )
        now = self._dispatcher.now()
        async with self._engine.begin() as conn:
            repo = WebhookRepository(conn)
            await OutboxRepository(conn).insert_event(draft, now=now)
            await repo.mark_fanned_out(draft.id)
            delivery_id = await repo.insert_delivery(
                event_id=draft.id, endpoint_id=endpoint.id, now=now
            )
        await self._dispatcher.send_now(delivery_id)
        return await self.get_delivery(delivery_id)

    async def get_delivery(self, delivery_id: int) -> DeliveryRecord:
        async with self._engine.connect() as conn:
            record = await WebhookRepository(conn).get_delivery(delivery_id)
        if record is None:
            raise NotFound(f"No delivery with id {delivery_id}", code="DELIVERY_NOT_FOUND")
        return record

    async def list_deliveries(
        self,
        *,
        endpoint_id: str | None,
        state: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[DeliveryRecord], str | None]:
        if state is not None and state not in DELIVERY_STATES:
            raise InvalidParameter(
                f"state must be one of {', '.join(DELIVERY_STATES)}", param="state"
            )
        if cursor is not None and cursor != "" and not cursor.isdigit():
            raise InvalidParameter("cursor is not one this API returned", param="cursor")
        before_id = int(cursor) if cursor else None
        async with self._engine.connect() as conn:
            records = await WebhookRepository(conn).deliveries_page(
                endpoint_id=endpoint_id, state=state, limit=limit + 1, before_id=before_id
            )
        if len(records) > limit:
            return records[:limit], str(records[limit - 1].id)
        return records, None
