"""The HTTP side of a streamed request: an `ImageEventStream` sent as `text/event-stream`.

sse-starlette does the ASGI work (one task sending events, one watching for the client's
disconnect, which cancels the sending). Its own pings are off: the stream writes its
`: keep-alive` comments itself, only while it waits on the provider.

Ending: a client that goes away stops the sending only; the request's work goes on to its
exit (`app.images.streaming`). On server shutdown sse-starlette sets `shutdown`, and waits
`shutdown_grace_period` for the stream to end by itself before it cuts the connection; the
stream drains for `drain_s` (shorter by `_CUT_MARGIN_S`), then ends with an `event: error`,
so the connection is closed cleanly, never cut.
"""

from __future__ import annotations

from typing import Final

import anyio
from sse_starlette.sse import EventSourceResponse

from app.images.streaming import ImageEventStream

#: time for the error event and the refund after the drain, before sse-starlette would cut
_CUT_MARGIN_S: Final = 5.0


class ImageEventResponse(EventSourceResponse):
    def __init__(self, stream: ImageEventStream) -> None:
        shutdown = anyio.Event()
        super().__init__(
            stream.events(shutdown),
            ping=0,
            shutdown_event=shutdown,
            shutdown_grace_period=stream.drain_s + _CUT_MARGIN_S,
        )
