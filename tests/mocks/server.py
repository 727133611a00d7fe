"""The lifecycle every provider mock shares: a Starlette app served by uvicorn in a daemon
thread on 127.0.0.1 (an ephemeral port).

    class MockFooUpstream(MockServer):
        label = "Foo"                      # thread "mock-foo", "mock Foo upstream did not start"

        def __init__(self) -> None:
            super().__init__()
            self.app = Starlette(routes=[...])

    with MockFooUpstream() as foo:         # or foo = MockFooUpstream().start(); foo.stop()
        foo.root_url                       # http://127.0.0.1:<port>
        foo.base_url                       # root_url, unless the subclass says otherwise

Subclasses build `app` in their constructor (after `super().__init__()`) and may override
`base_url` (OpenAI's ends in /v1, Seedream's in /api/v3). `stop()` is idempotent, and
`_sleep` naps in short steps so a simulated latency never holds up stopping.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import ClassVar, Self

import uvicorn
from starlette.types import ASGIApp


class MockServer:
    #: names the server thread (`mock-<label lowercased>`) and the start-up error
    label: ClassVar[str] = "mock"
    #: seconds uvicorn lets open connections finish on stop (None: wait for them)
    graceful_shutdown_s: ClassVar[int | None] = None
    #: seconds `start()` waits for uvicorn to come up
    start_timeout_s: ClassVar[float] = 10.0

    app: ASGIApp

    def __init__(self, *, loop: str = "auto") -> None:
        self._loop = loop
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0
        self.root_url = ""

    @property
    def base_url(self) -> str:
        return self.root_url

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket, self.port = sock, sock.getsockname()[1]
        self.root_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            loop=self._loop,
            lifespan="off",
            ws="none",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=self.graceful_shutdown_s,
        )
        server = self._server = uvicorn.Server(config)
        thread = self._thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"mock-{self.label.lower()}",
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"mock {self.label} upstream did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _sleep(self, seconds: float) -> None:
        # Short naps, so stopping the server never waits on a long simulated latency.
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._server is not None and self._server.should_exit:
                return
            await asyncio.sleep(min(left, 0.05))
