"""uvicorn's httptools protocol, sending a whole response's head and body in one write.

uvicorn writes the status line and headers as soon as the app sends `http.response.start`,
then the body on `http.response.body`: two `send` syscalls per response, two TCP segments,
and a client woken twice. On loopback a small write costs tens of microseconds of the
gateway's CPU (the kernel delivers the segment in the sender's context); at concurrency 1 this
was about a twentieth of the gateway's CPU per request (py-spy --native, docs/decisions.md).

`HeadWithBodyProtocol` gives each request/response cycle a `_HeadWithBody` transport: the
head of a response whose body has a known, non-zero length is held until that body's first
write, and both go in one `writelines` (one `writev`, no copy of the body). The hold never
outlives the loop iteration: a head still held at its end is written as it was (an app that
sent the head and then awaited something), as it is before anything else the cycle does to
the connection (close). Everything else (chunked streams, HEAD, 100 Continue, empty bodies)
is written exactly when uvicorn writes it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class _HeadWithBody:
    """The cycle's view of the connection's transport (the rest is the transport's own)."""

    def __init__(
        self,
        transport: asyncio.Transport,
        cycle: RequestResponseCycle,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._transport = transport
        self._cycle = cycle
        self._loop = loop
        self._head_written = False
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:  # the body's first write: both at once
            self._head = None
            self._transport.writelines((head, data))
            return
        if not self._head_written and self._cycle.response_started:
            self._head_written = True
            if self._body_follows():
                self._head = data
                self._loop.call_soon(self.flush)
                return
        self._transport.write(data)

    def _body_follows(self) -> bool:
        cycle = self._cycle
        return (
            cycle.chunked_encoding is False
            and cycle.expected_content_length > 0
            and cycle.scope["method"] != "HEAD"
        )

    def flush(self) -> None:
        """Write a head still held (the body did not follow in the same loop iteration)."""
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadWithBodyProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol`, each cycle writing through `_HeadWithBody`."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        cycle.transport = _HeadWithBody(self.transport, cycle, self.loop)  # type: ignore[assignment]
        super()._start_asgi_task(cycle, app)
