"""A charged request's result as server-sent events (SPEC 1.4).

By the time an `ImageEventStream` exists, the request is validated, admitted and held: every
refusal so far was an ordinary JSON error. The work (`ImageService._stream`) runs in a task
the service owns and feeds this stream through a queue:

    work task:  partial images ──▶ images ──▶ settle ──▶ the completed events (last: usage)
                      └── any failure: refunded by the admission's exit ──▶ event: error
    response:   queue ──▶ bytes, and `: keep-alive` whenever nothing came for `keepalive_s`

Events are `event: <type>` + `data: <json>` with the JSON's `type` equal to the event name,
as the SDKs dispatch on it, and each is valid against the SDK's event type
(`ImageGenStreamEvent` / `ImageEditStreamEvent`). Completed events always carry `b64_json`
(the SDKs' event types have no URL form), whatever `response_format` says. The SDK types
require `usage` on every completed event: the request's usage and cost ride on the last one,
earlier ones carry zeros, so adding up the events, or reading the last, gives the totals.

A client that hangs up stops only the sending: the work goes on to its end, and what the
provider produced is charged and stored under the Idempotency-Key exactly as for a plain call
(the retry is a replay). A server shutting down (`events(shutdown=...)`) lets the work run
for `drain_s` more; then it is cancelled, its hold refunded, and the stream ends with an
`event: error` (SERVICE_UNAVAILABLE, retry), never a cut connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio
import orjson

from app.adapters.base import ImageRequest
from app.errors import GatewayError
from app.images.results import (
    EVENT_QUALITIES,
    Body,
    Delivery,
    FinishedImage,
    ResponseBody,
    reported_quality,
    requested_background,
    usage_block,
)

logger = logging.getLogger(__name__)

KEEPALIVE: Final = b": keep-alive\n\n"


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


#: one event as the pieces of its bytes, the image's base64 among them uncopied
EventParts = list[bytes | memoryview]


def image_event(name: str, payload: dict[str, Any], b64: bytes | memoryview) -> EventParts:
    """An event whose JSON is `payload` plus `b64_json`: the base64 is spliced in as it is
    (it never needs JSON escaping), as in `results.render_body`, so joining the parts is
    the one copy of a multi-megabyte image the event costs."""
    data = orjson.dumps(payload)
    return [b"event: ", name.encode(), b"\ndata: ", data[:-1], b',"b64_json":"', b64, b'"}\n\n']


def completed_events(shape: StreamShape, delivery: Delivery) -> list[bytes]:
    return [b"".join(parts) for parts in _completed_parts(shape, delivery)]


def _completed_parts(shape: StreamShape, delivery: Delivery) -> list[EventParts]:
    name = f"{shape.prefix}.completed"
    created_at = int(time.time())
    events: list[EventParts] = []
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
        events.append(image_event(name, payload, image.b64))
    return events


def _image_payload(
    name: str,
    shape: StreamShape,
    image: FinishedImage,
    created_at: int,
    delivery: Delivery | None = None,
) -> dict[str, Any]:
    """The fields a partial and a completed event share, but for `b64_json` (`delivery`:
    the provider's word on the settings it used, known once the images are)."""
    said_quality = delivery.quality if delivery else None
    said_background = delivery.background if delivery else None
    quality = reported_quality(EVENT_QUALITIES, said_quality, shape.quality)
    return {
        "type": name,
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
        start: Callable[[ImageEventStream], asyncio.Task[None]],
        shape: StreamShape,
        keepalive_s: float,
        drain_s: float,
    ) -> None:
        self._shape = shape
        self._keepalive_s = keepalive_s
        self.drain_s = drain_s
        self._queue: asyncio.Queue[Body | None] = asyncio.Queue()
        self._partials = 0
        #: the work, started at once; kept to cancel it when a shutdown's grace runs out
        self._work = start(self)

    # the work's side ---------------------------------------------------------------------
    async def partial(self, image: FinishedImage) -> None:
        name = f"{self._shape.prefix}.partial_image"
        payload = _image_payload(name, self._shape, image, int(time.time()))
        payload["partial_image_index"] = self._partials
        self._partials += 1
        self._queue.put_nowait(b"".join(image_event(name, payload, image.b64)))

    def render_completed(self, delivery: Delivery) -> ResponseBody:
        """The completed events of a settled delivery, as their pieces: each image's base64
        uncopied (sent in bounded pieces; joined only if stored for an Idempotency-Key)."""
        return ResponseBody(
            tuple(part for event in _completed_parts(self._shape, delivery) for part in event)
        )

    def send(self, events: Body) -> None:
        self._queue.put_nowait(events)

    def fail(self, error: GatewayError) -> None:
        self._queue.put_nowait(error_event(error))

    def end(self) -> None:
        self._queue.put_nowait(None)

    # the response's side -----------------------------------------------------------------
    async def events(
        self, shutdown: anyio.Event | None = None
    ) -> AsyncIterator[bytes | memoryview]:
        """The stream's bytes until the work ends; `shutdown`: set when the server stops.

        A multi-megabyte completed event goes out in pieces of at most `WRITE_CHUNK_BYTES`,
        as a plain body does: as one message the server would copy it whole again to frame
        it as a chunk, and once more into the transport's buffer for what the socket does
        not take at once."""
        drain = None
        if shutdown is not None:
            drain = asyncio.create_task(self._drain_after(shutdown), name="image-stream-drain")
        try:
            while (item := await self._next()) is not None:
                body = item if isinstance(item, ResponseBody) else ResponseBody((item,))
                for piece in body.chunks():
                    yield piece
        finally:
            # the client may be gone: the work goes on to its exit regardless
            if drain is not None:
                drain.cancel()

    async def _drain_after(self, shutdown: anyio.Event) -> None:
        await shutdown.wait()
        await asyncio.sleep(self.drain_s)
        if not self._work.done():
            logger.warning(
                "shutting down: cancelling a stream still running after %gs", self.drain_s
            )
            self._work.cancel()  # refunded by its exit, which ends the stream with an error

    async def _next(self) -> Body | None:
        try:
            return await asyncio.wait_for(self._queue.get(), self._keepalive_s)
        except TimeoutError:
            return KEEPALIVE
