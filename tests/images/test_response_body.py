"""A rendered body carried as its pieces (`ResponseBody`) and written piece by piece
(`PiecewiseResponse`): the bytes on the wire are exactly the joined body `Response` would send,
for every output format and response format, one image or several; the pieces are bounded and
the images' base64 is never copied on the way (views into the provider's answer)."""

from __future__ import annotations

import asyncio
import base64
import io
import random
from typing import Any

import orjson
import pytest
from PIL import Image
from starlette.responses import Response

from app.adapters.base import ImageRequest, UpstreamImage
from app.api.images import PiecewiseResponse, respond
from app.images.admission import JSON, Outcome
from app.images.results import (
    WRITE_CHUNK_BYTES,
    Delivery,
    FinishedImage,
    ResponseBody,
    finish_image,
    render_body,
)
from app.images.streaming import ImageEventStream, StreamShape

pytestmark = pytest.mark.anyio

FORMATS = ["png", "jpeg", "webp"]


def noise(fmt: str, side: int) -> bytes:
    """An incompressible image: its base64 spans several write chunks."""
    pixels = random.Random(side).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, fmt.upper(), quality=95)
    return buffer.getvalue()


def provider_answer(images: list[bytes]) -> tuple[bytearray, list[memoryview]]:
    """An OpenAI-style answer in one buffer, and each image's base64 as a view into it."""
    answer = bytearray(b'{"data":[')
    spans = []
    for data in images:
        answer += b'{"b64_json":"'
        start = len(answer)
        answer += base64.b64encode(data)
        spans.append((start, len(answer)))
        answer += b'"},'
    answer[-1:] = b"]}"
    view = memoryview(answer)
    return answer, [view[start:end] for start, end in spans]


async def finished_images(fmt: str, count: int, side: int) -> list[FinishedImage]:
    _, views = provider_answer([noise(fmt, side + i) for i in range(count)])
    images = []
    for index, b64 in enumerate(views):
        image = UpstreamImage(b64=b64, revised_prompt=f"image {index}" if index else None)
        done = await finish_image(image, output_format=fmt, max_pixels=10**8)  # type: ignore[arg-type]
        assert done is not None and done.b64 is b64  # passed through, not copied
        images.append(done)
    return images


def body(images: list[FinishedImage], fmt: str, response_format: str) -> ResponseBody:
    request = ImageRequest(
        prompt="p", n=len(images), output_format=fmt, sizing="none", size=None, params={}
    )
    delivery = Delivery(images, 12_345, None, "high", None)
    return render_body(
        model_id="m",
        request=request,
        response_format=response_format,
        delivery=delivery,
        created=1,
    )


async def wire(response: Response) -> tuple[list[dict[str, Any]], bytes]:
    """What an ASGI server is handed: the messages, and the body bytes they carry."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        messages.append(message)

    await response({"type": "http", "method": "POST"}, receive, send)
    return messages, b"".join(bytes(m.get("body", b"")) for m in messages[1:])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("response_format", ["b64_json", "url"])
async def test_the_pieces_on_the_wire_are_the_joined_body(
    fmt: str, count: int, response_format: str
) -> None:
    images = await finished_images(fmt, count, side=500)
    rendered = body(images, fmt, response_format)
    joined = bytes(rendered)

    response = respond(Outcome(200, rendered))
    assert isinstance(response, PiecewiseResponse)
    messages, sent = await wire(response)
    old_messages, old_sent = await wire(Response(joined, status_code=200, media_type=JSON))

    assert sent == old_sent == joined
    assert messages[0] == old_messages[0]  # status and headers, content-length included
    assert messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    pieces = [m["body"] for m in messages[1:-1]]
    assert len(pieces) > count and all(m["more_body"] for m in messages[1:-1])
    assert all(0 < len(piece) <= WRITE_CHUNK_BYTES for piece in pieces)
    # and it is the response the client expects
    parsed = orjson.loads(joined)
    for index, image in enumerate(images):
        item = parsed["data"][index]
        if response_format == "url":
            assert item["url"] == f"data:image/{fmt};base64," + bytes(image.b64).decode()
        else:
            assert item["b64_json"] == bytes(image.b64).decode()
        assert item.get("revised_prompt") == image.revised_prompt
    assert parsed["usage"]["cost"]["total_cost"] == 0.012345


async def test_a_stored_body_is_answered_whole() -> None:
    response = respond(Outcome(200, b'{"stored":true}'))
    messages, sent = await wire(response)
    assert not isinstance(response, PiecewiseResponse)
    assert sent == b'{"stored":true}' and len(messages) == 2


def test_large_parts_are_sliced_as_views_small_ones_joined() -> None:
    answer = bytearray(b"x" * (3 * WRITE_CHUNK_BYTES + 17))
    view = memoryview(answer)
    rendered = ResponseBody((b"head", b",", view, b"tail", b"", view[:10]))

    chunks = list(rendered.chunks())

    assert b"".join(chunks) == bytes(rendered) == b"head," + bytes(answer) + b"tail" + b"x" * 10
    assert len(rendered) == len(bytes(rendered))
    assert all(len(chunk) <= WRITE_CHUNK_BYTES for chunk in chunks)
    slices = [chunk for chunk in chunks if isinstance(chunk, memoryview)]
    assert len(slices) == 3 and all(chunk.obj is answer for chunk in slices)  # no copy


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_any_chunk_size_gives_the_same_bytes(size: int) -> None:
    parts = (b"a" * 5, memoryview(b"b" * 130), b"", b"c" * 64, memoryview(b"d" * 3))
    rendered = ResponseBody(parts)
    chunks = list(rendered.chunks(size))
    assert b"".join(chunks) == b"".join(parts)
    assert all(0 < len(chunk) <= size for chunk in chunks)


async def test_a_streams_large_event_is_sent_in_bounded_pieces_small_ones_whole() -> None:
    event = b"event: image_generation.completed\ndata: " + b"A" * (3 * WRITE_CHUNK_BYTES + 7)

    def start(stream: ImageEventStream) -> asyncio.Task[None]:
        async def work() -> None:
            stream.send(b"event: small\n\n")
            stream.send(event)
            stream.end()

        return asyncio.ensure_future(work())

    shape = StreamShape("image_generation", None, None, "png")
    stream = ImageEventStream(start=start, shape=shape, keepalive_s=60, drain_s=1)
    pieces = [piece async for piece in stream.events()]
    assert pieces[0] == b"event: small\n\n"
    assert b"".join(pieces[1:]) == event
    assert len(pieces) == 1 + 4 and all(len(p) <= WRITE_CHUNK_BYTES for p in pieces)
