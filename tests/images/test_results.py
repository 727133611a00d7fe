"""finish_image: sniff and size from a decoded prefix, base64 passed through unchanged."""

from __future__ import annotations

import base64
import io
from unittest import mock

import pytest
from PIL import Image

from app.adapters.base import ImageRequest, UpstreamImage
from app.images import codec
from app.images.results import HEAD_BYTES, Delivery, finish_image, render_body

pytestmark = pytest.mark.anyio


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_matching_format_passes_the_providers_base64_through_undecoded() -> None:
    b64 = base64.b64encode(png())
    image = UpstreamImage(b64=b64, revised_prompt="red")
    with mock.patch.object(base64, "b64decode", wraps=base64.b64decode) as decode:
        done = await finish_image(image, output_format="png", max_pixels=10_000)
        assert done is not None and (done.width, done.height) == (40, 30)
        assert done.b64 is b64  # the very bytes the provider sent
        body = render_body(
            model_id="m",
            request=ImageRequest(
                prompt="p", n=1, output_format="png", sizing="none", size=None, params={}
            ),
            response_format="b64_json",
            delivery=Delivery([done], 1, None),
            created=1,
        )
    # only the header prefix was ever decoded
    assert all(len(call.args[0]) <= -(-HEAD_BYTES // 3) * 4 for call in decode.call_args_list)
    assert b64 in body and b'"revised_prompt":"red"' in body


async def test_other_format_is_transcoded_from_the_whole_image() -> None:
    image = UpstreamImage(b64=base64.b64encode(png()))
    done = await finish_image(image, output_format="jpeg", max_pixels=10_000)
    assert done is not None and codec.sniff_format(done.data) == "jpeg"
    assert base64.b64decode(done.b64) == done.data


async def test_jpeg_whose_frame_header_is_past_the_prefix_is_measured_on_the_whole() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (33, 22)).save(buffer, "JPEG")
    plain = buffer.getvalue()
    comment = b"x" * 40_000
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment  # a COM segment
    padded = plain[:2] + segment * 2 + plain[2:]  # pushes SOF0 beyond HEAD_BYTES
    assert padded.index(b"\xff\xc0") > HEAD_BYTES
    done = await finish_image(
        UpstreamImage(b64=base64.b64encode(padded)), output_format="jpeg", max_pixels=10_000
    )
    assert done is not None and (done.width, done.height) == (33, 22)


async def test_too_many_pixels_or_not_an_image_is_dropped() -> None:
    big = UpstreamImage(b64=base64.b64encode(png((200, 200))))
    assert await finish_image(big, output_format="png", max_pixels=10_000) is None
    text = UpstreamImage(b64=base64.b64encode(b"<svg></svg>"))
    assert await finish_image(text, output_format="png", max_pixels=10_000) is None


def test_upstream_image_decodes_and_encodes_on_demand() -> None:
    data = png()
    from_b64 = UpstreamImage(b64=base64.b64encode(data))
    assert from_b64.data == data and from_b64 == UpstreamImage(data)
    assert UpstreamImage(data).b64 == base64.b64encode(data)
    head = from_b64.head(10)
    assert len(head) >= 10 and data.startswith(head)
    with pytest.raises(ValueError):
        UpstreamImage()
