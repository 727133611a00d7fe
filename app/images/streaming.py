"""A charged request's result as server-sent events (SPEC 1.4).

By the time an `ImageEventStream` exists, the request is validated, admitted and held: every
refusal so far was an ordinary JSON error. What is left runs in one task, started at once, that
calls the provider and settles (the same `work` as a plain request); the events it produces
reach the response through a queue:

    work task:  partial images ──▶ images ──▶ settle ──▶ one completed per image (last: usage)
                      └── any failure: settled at zero (refunded) ──▶ event: error
    response:   queue ──▶ bytes, and `: keep-alive` whenever nothing came for `keepalive_s`

Events are `event: <type>` + `data: <json>` with the JSON's `type` equal to the event name,
as the SDKs dispatch on it, and each is valid against the SDK's event type
(`ImageGenStreamEvent` / `ImageEditStreamEvent`). Completed events always carry `b64_json`
(the SDKs' event types have no URL form), whatever `response_format` says. The SDK types
require `usage` on every completed event: the request's usage and cost ride on the last one,
earlier ones carry zeros, so adding up the events, or reading the last, gives the totals.

Closing: `aclose` runs once, from the event generator's `finally` (normal end, client gone) or
from the response (a stream never iterated). It cancels the work if it is still running:
nothing was produced yet, so the hold is refunded. Work that already finished is left as
settled: the images exist and the provider was paid, so they are charged even if the client
hung up before reading them. Then the service's `close` callback gets the completed events'
bytes (None on failure): lease release, Idempotency-Key completion or release.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio
import orjson

from app.adapters.base import ImageRequest
from app.errors import GatewayError, InternalError
from app.images.results import (
    EVENT_QUALITIES,
    Delivery,
    FinishedImage,
    reported_quality,
    requested_background,
    usage_block,
)

logger = logging.getLogger(__name__)

KEEPALIVE: Final = b": keep-alive\n\n"

#: where the service hands each (normalised) partial image
FinishedSink = Callable[[FinishedImage], Awaitable[None]]
Work = Callable[[FinishedSink], Awaitable[Delivery]]


@dataclass(frozen=True, slots=True)
class StreamShape:
    """What the events of one stream share: the event family and the request's settings."""

    #: "image_generation" or "image_edit"
    prefix: str
    #: as requested (None: the model has no such setting or the client left it out)
    quality: str | None
    background: str | None
    output_format: str

    @classmethod
    def of(cls, prefix: str, request: ImageRequest) -> StreamShape:
        return cls(prefix, request.quality, requested_background(request), request.output_format)


def sse_event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def error_event(error: GatewayError) -> bytes:
    return sse_event("error", {"type": "error", **error.body()})


def completed_events(shape: StreamShape, delivery: Delivery) -> list[bytes]:
    name = f"{shape.prefix}.completed"
    created_at = int(time.time())
    events: list[bytes] = []
    last = len(delivery.images) - 1
    for index, image in enumerate(delivery.images):
        payload = _image_payload(name, shape, image, created_at, delivery)
        payload["index"] = index
        if image.revised_prompt is not None:
            payload["revised_prompt"] = image.revised_prompt
        payload["usage"] = (
            usage_block(delivery.cost_micros, delivery.usage)
            if index == last
            else usage_block(0, None)
        )
        events.append(sse_event(name, payload))
    return events


def _image_payload(
    name: str,
    shape: StreamShape,
    image: FinishedImage,
    created_at: int,
    delivery: Delivery | None = None,
) -> dict[str, Any]:
    """The fields a partial and a completed event share (`delivery`: the provider's word on
    the settings it used, known once the images are)."""
    said_quality = delivery.quality if delivery else None
    said_background = delivery.background if delivery else None
    quality = reported_quality(EVENT_QUALITIES, said_quality, shape.quality)
    return {
        "type": name,
        "b64_json": image.b64.decode("ascii"),
        "created_at": created_at,
        "size": image.size,
        "quality": quality or "auto",
        "background": image.background(said_background, shape.background),
        "output_format": shape.output_format,
    }


class ImageEventStream:
    """The events of one admitted request; iterate `events()` exactly once."""

    def __init__(
        self,
        *,
        work: Work,
        shape: StreamShape,
        keepalive_s: float,
        close: Callable[[bytes | None], Awaitable[None]],
    ) -> None:
        self._shape = shape
        self._keepalive_s = keepalive_s
        self._close = close
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._partials = 0
        self._completed: bytes | None = None
        self._closed = False
        self._task = asyncio.create_task(self._produce(work), name="image-event-stream")

    async def events(self) -> AsyncIterator[bytes]:
        try:
            while (item := await self._next()) is not None:
                yield item
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._task.cancel()  # a no-op once the work is done (and so settled)
        await asyncio.gather(self._task, return_exceptions=True)
        await self._close(self._completed)

    async def _next(self) -> bytes | None:
        try:
            return await asyncio.wait_for(self._queue.get(), self._keepalive_s)
        except TimeoutError:
            return KEEPALIVE

    async def _produce(self, work: Work) -> None:
        try:
            delivery = await work(self._on_partial)
        except GatewayError as error:
            self._queue.put_nowait(error_event(error))
        except Exception:  # e.g. the database failing the settlement: the sweeper refunds
            logger.exception("image stream failed")
            self._queue.put_nowait(error_event(InternalError("The gateway hit an internal error.")))
        else:
            events = completed_events(self._shape, delivery)
            self._completed = b"".join(events)
            for event in events:
                self._queue.put_nowait(event)
        finally:
            self._queue.put_nowait(None)

    async def _on_partial(self, image: FinishedImage) -> None:
        name = f"{self._shape.prefix}.partial_image"
        payload = _image_payload(name, self._shape, image, int(time.time()))
        payload["partial_image_index"] = self._partials
        self._partials += 1
        self._queue.put_nowait(sse_event(name, payload))
