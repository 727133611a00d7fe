"""finish_image: sniff and size from a decoded prefix, base64 passed through unchanged; the
SDK-shaped usage, background and quality of bodies and completed events."""

from __future__ import annotations

import base64
import io
from unittest import mock

import orjson
import pytest
from PIL import Image

from app.adapters.base import ImageRequest, TokenUsage, UpstreamImage
from app.images import codec
from app.images.results import (
    HEAD_BYTES,
    Delivery,
    FinishedImage,
    finish_image,
    render_body,
    usage_block,
)
from app.images.streaming import StreamShape, completed_events

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
        body = bytes(
            render_body(
                model_id="m",
                request=ImageRequest(
                    prompt="p", n=1, output_format="png", sizing="none", size=None, params={}
                ),
                response_format="b64_json",
                delivery=Delivery([done], 1, None),
                created=1,
            )
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


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "alpha"),
    [
        (encoded(Image.new("RGB", (8, 8)), "PNG"), False),
        (encoded(Image.new("RGBA", (8, 8)), "PNG"), True),
        (encoded(Image.new("LA", (8, 8)), "PNG"), True),
        (encoded(Image.new("P", (8, 8)), "PNG", transparency=0), True),  # a tRNS chunk
        (encoded(Image.new("P", (8, 8)), "PNG"), False),
        (encoded(Image.new("RGB", (8, 8)), "JPEG"), False),
        (encoded(Image.new("RGB", (8, 8)), "WEBP"), False),
        (encoded(Image.new("RGBA", (8, 8), (1, 2, 3, 100)), "WEBP"), True),
        (encoded(Image.new("RGBA", (8, 8), (1, 2, 3, 100)), "WEBP", lossless=True), True),
        (encoded(Image.new("RGB", (8, 8)), "WEBP", lossless=True), False),
        (b"\x89PNG\r\n\x1a\n", False),  # cut short
    ],
)
def test_has_alpha_reads_the_header(data: bytes, alpha: bool) -> None:
    assert codec.has_alpha(data) is alpha


def request(**fields: object) -> ImageRequest:
    base: dict[str, object] = dict(
        prompt="p", n=1, output_format="png", sizing="none", size=None, params={}
    )
    return ImageRequest(**{**base, **fields})  # type: ignore[arg-type]


async def finished(mode: str = "RGB") -> FinishedImage:
    done = await finish_image(
        encoded(Image.new(mode, (8, 8)), "PNG"), output_format="png", max_pixels=10_000
    )
    assert done is not None
    return done


def test_usage_block_has_every_sdk_field_and_zeros_when_unreported() -> None:
    assert usage_block(1500, None) == {
        "input_tokens": 0,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
        "output_tokens": 0,
        "total_tokens": 0,
        "cost": {"total_cost": 0.0015},
    }
    reported = TokenUsage(5, 20, 25, {"text_tokens": 5}, {"image_tokens": 20})
    block = usage_block(0, reported)
    assert block["input_tokens_details"] == {"image_tokens": 0, "text_tokens": 5}
    assert block["output_tokens_details"] == {"image_tokens": 20, "text_tokens": 0}
    assert (block["total_tokens"], block["cost"]) == (25, {"total_cost": 0})


async def test_body_reports_background_quality_and_format_as_the_sdk_allows() -> None:
    opaque, clear = await finished(), await finished("RGBA")

    def body(images: list[FinishedImage], req: ImageRequest, **said: str) -> dict[str, object]:
        delivery = Delivery(images, 1, None, said.get("quality"), said.get("background"))
        raw = render_body(model_id="m", request=req, response_format="b64_json", delivery=delivery)
        parsed: dict[str, object] = orjson.loads(bytes(raw))
        return parsed

    plain = body([opaque], request(quality="auto", params={"background": "transparent"}))
    # no alpha: opaque whatever was asked; `auto` is no ImagesResponse quality
    assert (plain["background"], plain["output_format"], "quality" in plain) == (
        "opaque",
        "png",
        False,
    )
    resolved = body([clear], request(quality="auto"), quality="high", background="opaque")
    assert (resolved["quality"], resolved["background"]) == ("high", "opaque")
    asked = body([clear], request(quality="low", extra={"background": "transparent"}))
    assert (asked["quality"], asked["background"]) == ("low", "transparent")
    assert body([clear], request(quality="hd"))["background"] == "transparent"
    assert "quality" not in body([clear], request(quality="hd"))


async def test_every_completed_event_carries_usage_the_last_the_totals() -> None:
    images = [await finished(), await finished("RGBA")]
    usage = TokenUsage(3, 40, 43, {"text_tokens": 3})
    shape = StreamShape.of("image_edit", request(quality=None))
    events = completed_events(shape, Delivery(images, 2000, usage, quality="medium"))
    payloads = [orjson.loads(event.split(b"data: ", 1)[1]) for event in events]
    assert [p["type"] for p in payloads] == ["image_edit.completed"] * 2
    assert [p["usage"]["total_tokens"] for p in payloads] == [0, 43]
    assert [p["usage"]["cost"]["total_cost"] for p in payloads] == [0, 0.002]
    assert [p["background"] for p in payloads] == ["opaque", "transparent"]
    assert [p["quality"] for p in payloads] == ["medium", "medium"]  # the provider's word
    no_word = completed_events(shape, Delivery(images[:1], 0, None))
    assert orjson.loads(no_word[0].split(b"data: ", 1)[1])["quality"] == "auto"
