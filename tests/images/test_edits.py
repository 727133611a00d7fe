"""Edit bodies: JSON data URIs, image checks, and the Idempotency-Key fingerprint."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from app.errors import GatewayError, InvalidRequest, PayloadTooLarge
from app.images.edits import RequestBody, check_images, edit_body_from_json, edit_fingerprint


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, "PNG")
    return buffer.getvalue()


def uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_json_body_accepts_the_image_url_spellings() -> None:
    data = png()
    body = edit_body_from_json(
        {
            "prompt": "x",
            "images": [{"image_url": uri(data)}, {"image_url": {"url": uri(data)}}, uri(data)],
            "mask": {"image_url": uri(data)},
        },
        max_image_bytes=len(data),
    )
    # nothing is decoded yet: one placeholder per image, for validation and pricing
    assert body.images == [b"", b"", b""] and body.mask == b""
    decoded = body.decoded()
    assert decoded.images == [data, data, data]
    assert decoded.mask == data
    assert not decoded.from_form and decoded.encoded is None


@pytest.mark.parametrize(
    ("images", "code", "param"),
    [
        ("data:...", "INVALID_PARAMETER", "images"),
        ([{"image_url": 3}], "INVALID_PARAMETER", "images[0]"),
        ([{"image_url": "https://example.com/a.png"}], "INVALID_IMAGE", "images[0]"),
        ([{"image_url": "data:image/png;base64,@@@"}], "INVALID_IMAGE", "images[0]"),
    ],
)
def test_json_body_refusals(images: object, code: str, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        edit_body_from_json({"prompt": "x", "images": images}, max_image_bytes=1000).decoded()
    assert (info.value.code, info.value.param) == (code, param)


def test_bad_base64_is_refused_only_when_decoded() -> None:
    body = edit_body_from_json(
        {"prompt": "x", "images": ["data:image/png;base64,@@@"]}, max_image_bytes=1000
    )
    assert body.images == [b""]  # shape and size checked; the payload not read yet
    with pytest.raises(InvalidRequest) as info:
        body.decoded()
    assert (info.value.code, info.value.param) == ("INVALID_IMAGE", "images[0]")


def test_json_body_drops_the_image_text_as_it_decodes() -> None:
    fields = {"prompt": "x", "images": [uri(png())], "mask": uri(png())}
    body = edit_body_from_json(fields, max_image_bytes=1000)
    assert "images" not in body.fields and "mask" not in body.fields
    assert body.fields == {"prompt": "x"}
    encoded = body.encoded
    assert encoded is not None and len(encoded.images) == 1
    body.decoded()
    assert encoded.images == [] and encoded.mask is None  # each text let go as decoded


@pytest.mark.parametrize("field", ["images", "mask"])
def test_an_oversized_data_uri_is_413_from_its_length(field: str) -> None:
    data = png()

    def body() -> dict[str, object]:  # fresh each time: the decoder empties the list
        return {field: [uri(data)] if field == "images" else uri(data)}

    assert edit_body_from_json(body(), max_image_bytes=len(data)) is not None
    with pytest.raises(PayloadTooLarge) as info:
        edit_body_from_json(body(), max_image_bytes=len(data) - 1)
    assert info.value.param == ("images[0]" if field == "images" else "mask")
    assert f"{len(data)} bytes" in info.value.message


def test_check_images_limits() -> None:
    check_images(RequestBody({}, images=[png()]), max_bytes=10_000, max_pixels=100)
    with pytest.raises(PayloadTooLarge):
        check_images(RequestBody({}, images=[png()]), max_bytes=10, max_pixels=100)
    with pytest.raises(InvalidRequest, match="9x9 pixels"):
        check_images(RequestBody({}, images=[png((9, 9))]), max_bytes=10_000, max_pixels=80)
    with pytest.raises(InvalidRequest, match="cannot be read") as info:
        check_images(RequestBody({}, mask=b"\x89PNG\r\n\x1a\n"), max_bytes=10_000, max_pixels=80)
    assert info.value.param == "mask"


def test_fingerprint_ignores_how_the_bytes_travelled() -> None:
    data = png()
    form = RequestBody({"prompt": "x", "n": "2"}, images=[data], from_form=True)
    same = RequestBody({"n": "2", "prompt": "x"}, images=[bytes(data)], from_form=True)
    other = RequestBody({"prompt": "x", "n": "2"}, images=[png((9, 9))], from_form=True)
    assert edit_fingerprint(form) == edit_fingerprint(same) != edit_fingerprint(other)


def test_a_json_edit_is_fingerprinted_without_decoding() -> None:
    def body(data: bytes) -> RequestBody:
        return edit_body_from_json({"prompt": "x", "images": [uri(data)]}, max_image_bytes=1000)

    first, same, other = body(png()), body(png()), body(png((9, 9)))
    assert edit_fingerprint(first) == edit_fingerprint(same) != edit_fingerprint(other)
    assert first.images == [b""]  # still encoded
