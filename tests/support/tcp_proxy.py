"""A loopback TCP proxy a test can freeze or cut, to play a database or Redis that stops answering.

    with TcpProxy(("127.0.0.1", 5432)) as proxy:      # listens on 127.0.0.1:<proxy.port>
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/db"
        proxy.freeze()    # connections stay open, nothing moves either way (a hung server,
                          # a partitioned network); new connections are accepted and hang too
        proxy.cut()       # every connection is reset, new ones are refused (a crashed server)
        proxy.restore()   # back to forwarding (bytes held while frozen are delivered, as TCP
                          # would after a partition heals)

`drop_next_reply()` forwards the next request but swallows the server's answer: the server did
the work, the client never hears of it (a lost reply). With `then_freeze=True` the proxy
freezes right after, so the client's retry goes unanswered too.

It runs its own event loop in a daemon thread, so it keeps serving while the test's loop
waits, and works under any test runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")

_CHUNK = 65536


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        assert target[0].startswith("127."), "loopback only"
        self._target = target
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._forwarding: asyncio.Event | None = None  # made on the proxy's own loop
        self._refusing = False
        self._drop_replies = False
        self._freeze_after_drop = False
        self.dropped = 0
        self.port = 0

    # control, from the test's thread ------------------------------------------------------
    def freeze(self) -> None:
        self._run(self._set_forwarding(False))

    def restore(self) -> None:
        self._refusing = False
        self._drop_replies = False
        self._run(self._set_forwarding(True))

    def cut(self) -> None:
        self._refusing = True
        self._run(self._close_all())

    def drop_next_reply(self, *, then_freeze: bool = False) -> None:
        self._freeze_after_drop = then_freeze
        self._drop_replies = True

    # lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._thread.start()
        self._run(self._set_forwarding(True))
        self._server = self._run(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._run(self._set_forwarding(True))
        if self._server is not None:
            self._server.close()
        self._run(self._close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    # the proxy ------------------------------------------------------------------------------
    async def _set_forwarding(self, on: bool) -> None:
        if self._forwarding is None:
            self._forwarding = asyncio.Event()
        if on:
            self._forwarding.set()
        else:
            self._forwarding.clear()

    async def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer, replies=False),
            self._pipe(up_reader, writer, replies=True),
        )
        for end in (writer, up_writer):
            self._writers.discard(end)
            end.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                assert self._forwarding is not None
                await self._forwarding.wait()  # frozen: hold the bytes, like a partition
                if replies and self._drop_replies:
                    self._drop_replies = False
                    self.dropped += 1
                    if self._freeze_after_drop:
                        self._forwarding.clear()
                    continue
                if data:
                    writer.write(data)
                    await writer.drain()
        writer.transport.abort()
