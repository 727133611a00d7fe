"""The benchmark's upstream: a minimal OpenAI Images server that costs (almost) nothing.

    python bench/mock_upstream.py [--port 0]       # prints its base URL, serves until killed

Every target of the benchmark (the gateway, the LiteLLM proxy, the load generator directly)
talks to this one process, so the upstream's own cost is identical for all of them and as
small as it can be: a hand-written HTTP/1.1 keep-alive server on bare asyncio (no framework),
answering every `POST .../images/generations` with a response body built once per image size.

The knobs travel in the prompt, because the prompt is the one field every gateway forwards
unchanged (`size` is validated against the model's sizes and `extra` fields may be dropped):

    "px=1024 delay_ms=5000 a lighthouse"   ->  a 1024x1024 image after 5 s

- `px=N` (default 64): an N x N PNG of random noise (seeded, so identical across runs), so a
  1024 px image is ~3.1 MB of PNG, ~4.2 MB of base64 JSON: incompressible like a real photo.
- `delay_ms=N` (default 0): the upstream's "generation time", slept without blocking.

The answer is shaped like OpenAI's for GPT Image models (`created`, `data[].b64_json`,
`usage`, `size`, `output_format`; see the API reference "Images - create" and the SDK's
`types/images_response.py`). `GET /health` answers 200 for readiness probes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import random
import re
import signal
import time
from typing import Final

import orjson
from PIL import Image

_KNOB = re.compile(rb"\b(px|delay_ms)=(\d+)")
_MAX_PX: Final = 2048
_HEAD_END: Final = b"\r\n\r\n"


def noise_png(px: int) -> bytes:
    """An incompressible px x px RGB PNG (seeded noise: the same bytes on every run)."""
    rng = random.Random(px)
    image = Image.frombytes("RGB", (px, px), rng.randbytes(px * px * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


class Bodies:
    """One finished response body per image size, built on first use and kept."""

    def __init__(self) -> None:
        self._bodies: dict[int, bytes] = {}

    def get(self, px: int) -> bytes:
        body = self._bodies.get(px)
        if body is None:
            b64 = base64.b64encode(noise_png(px))
            head = orjson.dumps({"created": int(time.time())})[:-1]
            tail = orjson.dumps(
                {
                    "usage": {
                        "input_tokens": 10,
                        "output_tokens": 272,
                        "total_tokens": 282,
                        "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
                    },
                    "size": f"{px}x{px}",
                    "output_format": "png",
                }
            )[1:]
            body = head + b',"data":[{"b64_json":"' + b64 + b'"}],' + tail
            self._bodies[px] = body
        return body


def knobs(body: bytes) -> tuple[int, float]:
    """(px, delay in seconds) from the request body's prompt."""
    px, delay_ms = 64, 0
    for name, value in _KNOB.findall(body[:4096]):
        if name == b"px":
            px = max(1, min(_MAX_PX, int(value)))
        else:
            delay_ms = int(value)
    return px, delay_ms / 1000


class UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies: all the clients here send."""

    def __init__(self, bodies: Bodies) -> None:
        self._bodies = bodies
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._next_request()

    def _next_request(self) -> None:
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            return
        head = bytes(self._buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        method, path, _ = [*lines[0].split(" ", 2), "", ""][:3]
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if len(self._buffer) < end + 4 + length:
            return  # the body is still arriving
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        self._busy = True
        if method == "POST" and path.rstrip("/").endswith("/images/generations"):
            px, delay = knobs(body)
            payload = self._bodies.get(px)
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self._answer, 200, payload, close)
                return
            self._answer(200, payload, close)
        elif method == "GET" and path.startswith("/health"):
            self._answer(200, b'{"status":"ok"}', close)
        else:
            self._answer(404, b'{"error":{"message":"not found","type":"invalid_request"}}', close)

    def _answer(self, status: int, payload: bytes, close: bool) -> None:
        transport = self._transport
        self._busy = False
        if transport is None:
            return
        reason = "OK" if status == 200 else "Not Found"
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n"
            f"connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        ).encode("latin-1")
        transport.writelines((head, payload))
        if close:
            transport.close()
        elif self._buffer:
            self._next_request()


async def serve(port: int) -> None:
    bodies = Bodies()
    for px in (64, 1024):  # build the common bodies before announcing the URL
        bodies.get(px)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(bodies), "127.0.0.1", port, backlog=4096
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{bound}/v1", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port))
    else:
        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
