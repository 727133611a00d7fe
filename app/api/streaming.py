"""The HTTP side of a streamed request: an `ImageEventStream` sent as `text/event-stream`.

sse-starlette does the ASGI work (one task sending events, one watching for the client's
disconnect, which cancels the sending). Its own pings are off: the stream writes its
`: keep-alive` comments itself, only while it waits on the provider. Whatever ends the
response (last event, client gone, server shutdown, a failure before the first event), the
stream is closed, so the hold is settled and the rate-limit lease released even when the
event generator never started.
"""

from __future__ import annotations

import anyio
from sse_starlette.sse import EventSourceResponse
from starlette.types import Receive, Scope, Send

from app.images.streaming import ImageEventStream


class ImageEventResponse(EventSourceResponse):
    def __init__(self, stream: ImageEventStream) -> None:
        super().__init__(stream.events(), ping=0)
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
