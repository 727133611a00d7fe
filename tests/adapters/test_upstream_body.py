"""An upstream answer read into one buffer (`read_buffer`): sized once from its Content-Length,
never past the download limit, and a body that is not the length it declared is a clean
`UpstreamError` (a 502 and a refund upstream of here), never a crash or a short image. (A
connection cut before its declared length, on the real clients, is tests/test_upstream_client.py's
`test_a_connection_reset_mid_answer_is_unavailable`: it now reads through `read_buffer` too.)"""

from __future__ import annotations

import base64
import gzip
import sys
from collections.abc import AsyncIterator, Mapping

import httpx
import pytest

from app.adapters.base import AdapterContext
from app.adapters.openai import OpenAIAdapter
from app.adapters.upstream_http import read_buffer, read_limited
from app.catalog.schema import ProviderConfig
from app.errors import UpstreamError
from tests.adapters.test_openai import make_request

pytestmark = pytest.mark.anyio


class Answer:
    """An `UpstreamResponse` whose body comes in the given pieces; counts what was read."""

    def __init__(self, pieces: list[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.headers = httpx.Headers(headers or {})
        self.status_code = 200
        self.is_success, self.is_redirect = True, False
        self._pieces = pieces
        self.read = 0

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            self.read += 1
            yield piece


def declared(pieces: list[bytes], length: int | None = None) -> Answer:
    size = sum(map(len, pieces)) if length is None else length
    return Answer(pieces, {"content-length": str(size)})


async def test_a_declared_body_fills_one_buffer_of_exactly_its_length() -> None:
    pieces = [b"a" * 70_000, b"b" * 65_536, b"c" * 3]
    answer = declared(pieces)
    buffer = await read_buffer(answer, 1 << 20, what="answer")
    assert buffer == b"".join(pieces) and answer.read == 3
    # allocated once at the declared size: no growth slack, no second buffer to join into
    assert sys.getsizeof(buffer) - sys.getsizeof(bytearray()) <= len(buffer) + 1


async def test_an_undeclared_body_is_read_as_it_comes() -> None:
    pieces = [b"x" * 1000, b"y" * 10]
    assert await read_buffer(Answer(pieces), 1 << 20, what="answer") == b"".join(pieces)
    assert await read_limited(Answer(pieces), 1 << 20, what="answer") == b"".join(pieces)
    assert await read_buffer(Answer([]), 10, what="answer") == b""


@pytest.mark.parametrize(
    ("pieces", "length", "message"),
    [
        ([b"a" * 100, b"b" * 50], 120, "longer than its declared 120 bytes"),
        ([b"a" * 100], 150, "100 bytes, shorter than its declared 150"),
        ([], 10, "0 bytes, shorter than its declared 10"),
    ],
)
async def test_a_body_not_the_length_it_declared_is_an_upstream_error(
    pieces: list[bytes], length: int, message: str
) -> None:
    with pytest.raises(UpstreamError, match=message):
        await read_buffer(declared(pieces, length), 1 << 20, what="answer")


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    answer = declared([b"a" * 10], 5_000_000_000)  # nothing that large is ever allocated
    with pytest.raises(UpstreamError, match="5000000000 bytes, over the 1000-byte limit"):
        await read_buffer(answer, 1000, what="answer")
    assert answer.read == 0


async def test_an_undeclared_body_stops_at_the_limit() -> None:
    answer = Answer([b"a" * 600, b"b" * 600, b"c" * 600])
    with pytest.raises(UpstreamError, match="exceeds the 1000-byte limit"):
        await read_buffer(answer, 1000, what="answer")
    assert answer.read == 2  # the rest was never read


async def test_an_encoded_body_is_not_held_to_its_compressed_length() -> None:
    body = b"z" * 10_000
    answer = Answer([body], {"content-length": "40", "content-encoding": "gzip"})  # decoded
    assert await read_buffer(answer, 1 << 20, what="answer") == body
    assert len(gzip.compress(body)) < 100


def png_answer() -> bytes:
    from tests.images.test_results import png

    return b'{"data":[{"b64_json":"' + base64.b64encode(png()) + b'"}]}'


def adapter(http: httpx.AsyncClient) -> OpenAIAdapter:
    provider = ProviderConfig.model_validate(
        {"adapter": "openai", "base_url": "http://provider.test/v1", "timeout_s": 5}
    )
    return OpenAIAdapter(provider, AdapterContext(http=http, max_download_bytes=1 << 20))


@pytest.mark.parametrize("delta", [-7, 7])
async def test_the_adapter_answers_a_mislabelled_body_with_a_502(delta: int) -> None:
    body = png_answer()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"content-length": str(len(body) + delta)},
            stream=httpx.ByteStream(body),
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        with pytest.raises(UpstreamError, match="declared") as raised:
            await adapter(http).generate(make_request(), upstream_model="gpt-image-1")
    assert raised.value.status == 502


async def test_the_adapter_reads_a_correct_body_into_views_of_one_buffer() -> None:
    body = png_answer()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        result = await adapter(http).generate(make_request(), upstream_model="gpt-image-1")
    b64 = result.images[0].b64
    assert isinstance(b64, memoryview) and isinstance(b64.obj, bytearray)
    assert bytes(b64) in body
