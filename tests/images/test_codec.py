"""The codec reads sizes from headers exactly as Pillow would, and transcodes correctly."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from app.errors import InvalidRequest, UpstreamError
from app.images import codec
from app.images.codec import ImageError


def encoded(fmt: str, size: tuple[int, int] = (37, 23), mode: str = "RGB", **save: object) -> bytes:
    colour = (200, 30, 60, 0) if mode == "RGBA" else (200, 30, 60)
    buffer = io.BytesIO()
    Image.new(mode, size, colour[: len(mode)]).save(buffer, fmt, **save)
    return buffer.getvalue()


SAMPLES = {
    "png": encoded("PNG"),
    "png-rgba": encoded("PNG", mode="RGBA"),
    "jpeg": encoded("JPEG"),
    "jpeg-progressive-exif": encoded("JPEG", progressive=True, exif=b"Exif\x00\x00" + b"\x00" * 64),
    "webp-lossy": encoded("WEBP"),
    "webp-lossless": encoded("WEBP", lossless=True),
    "webp-extended": encoded("WEBP", mode="RGBA"),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_sniff_and_size_agree_with_pillow(name: str) -> None:
    data = SAMPLES[name]
    with Image.open(io.BytesIO(data)) as image:
        expected_format, expected_size = image.format, image.size

    assert (
        codec.sniff_format(data)
        == {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}[str(expected_format)]
    )
    assert codec.image_size(data) == expected_size == (37, 23)


@pytest.mark.parametrize("size", [(1, 1), (16383, 2), (3, 16383)])
def test_webp_size_extremes(size: tuple[int, int]) -> None:
    assert codec.image_size(encoded("WEBP", size)) == size
    assert codec.image_size(encoded("WEBP", size, lossless=True)) == size


def test_large_jpeg_size() -> None:
    assert codec.image_size(encoded("JPEG", (4000, 3000))) == (4000, 3000)


@pytest.mark.parametrize(
    "data",
    [b"", b"GIF89a....", b"<svg xmlns=...>", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\xff\xd8"],
)
def test_sniff_rejects_other_bytes(data: bytes) -> None:
    assert codec.sniff_format(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a" + b"\x00" * 30,
        SAMPLES["png"][:20],
        SAMPLES["jpeg"][:40],
        b"\xff\xd8\xff\xd9",  # SOI then EOI: no frame
        SAMPLES["webp-lossy"][:24],
        b"RIFF\x00\x00\x00\x00WEBPVP8Z" + b"\x00" * 20,
        b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\x00" * 8,  # 0x0
    ],
)
def test_unreadable_headers_raise_image_error(data: bytes) -> None:
    with pytest.raises(ImageError):
        codec.image_size(data)


def test_transcode_flattens_transparency_on_white_for_jpeg() -> None:
    out = codec.transcode(SAMPLES["png-rgba"], "jpeg")

    assert codec.sniff_format(out) == "jpeg"
    with Image.open(io.BytesIO(out)) as image:
        assert image.mode == "RGB"
        assert all(channel >= 250 for channel in image.getpixel((5, 5)))  # type: ignore[union-attr]


def test_transcode_palette_png_with_transparency_to_jpeg() -> None:
    buffer = io.BytesIO()
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.save(buffer, "PNG", transparency=0)

    out = codec.transcode(buffer.getvalue(), "jpeg")

    with Image.open(io.BytesIO(out)) as image:
        assert all(channel >= 250 for channel in image.getpixel((1, 1)))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("source", "target"), [("jpeg", "png"), ("png", "webp"), ("webp-lossy", "jpeg")]
)
def test_transcode_keeps_the_size(source: str, target: codec.ImageFormat) -> None:
    out = codec.transcode(SAMPLES[source], target, quality=70)
    assert codec.sniff_format(out) == target
    assert codec.image_size(out) == (37, 23)


def test_transcode_checks_pixels_before_decoding() -> None:
    with pytest.raises(ImageError, match="exceeds the limit"):
        codec.transcode(SAMPLES["png"], "jpeg", max_pixels=100)


def test_transcode_of_corrupt_bytes_raises_image_error() -> None:
    with pytest.raises(ImageError):
        codec.transcode(SAMPLES["png"][:60], "jpeg")


@pytest.mark.anyio
async def test_transcode_async(anyio_backend: str) -> None:
    out = await codec.transcode_async(SAMPLES["png"], "webp")
    assert codec.sniff_format(out) == "webp"


def test_check_pixels() -> None:
    codec.check_pixels((100, 100), 10_000)
    with pytest.raises(InvalidRequest) as client_side:
        codec.check_pixels((100, 101), 10_000)
    assert client_side.value.code == "INVALID_IMAGE"
    with pytest.raises(UpstreamError, match="100x101 pixels"):
        codec.check_pixels((100, 101), 10_000, error=UpstreamError)


def test_decode_b64_is_strict() -> None:
    assert codec.decode_b64(base64.b64encode(b"hello").decode()) == b"hello"
    for bad in ("aGVsbG8", "aGVs\nbG8=", "aGVs bG8=", "aGVsbG8_", "!!!!"):
        with pytest.raises(ImageError, match="invalid base64"):
            codec.decode_b64(bad)


def test_decode_b64_refuses_non_ascii_text() -> None:
    with pytest.raises(ImageError):
        codec.decode_b64("QUJ\u00e9")


@pytest.mark.parametrize("size", range(12))
def test_b64_decoded_size_is_exact(size: int) -> None:
    text = "data:image/png;base64," + base64.b64encode(b"x" * size).decode()
    assert codec.b64_decoded_size(text, text.index(",") + 1) == size


def test_an_oversized_data_uri_is_refused_before_decoding() -> None:
    uri = codec.data_uri("png", "A" * 4000 + "!")  # never decoded: "!" is not base64
    with pytest.raises(codec.ImageTooLarge) as info:
        codec.decode_data_uri(uri, max_bytes=2999)
    assert (info.value.size, info.value.limit) == (3000, 2999)


def test_data_uri_round_trip() -> None:
    b64 = codec.encode_b64(SAMPLES["png"])
    uri = codec.data_uri("png", b64)

    assert uri.startswith("data:image/png;base64,iVBOR")
    assert codec.decode_data_uri(uri) == SAMPLES["png"]
    for bad in ("http://x/y.png", "data:image/png," + b64, "data:image/png;base64"):
        with pytest.raises(ImageError):
            codec.decode_data_uri(bad)


def _with_segments(jpeg: bytes, segments: int, fill: int = 0) -> bytes:
    """`jpeg` with `segments` empty APP0 segments (and `fill` 0xFF bytes) after its SOI."""
    return jpeg[:2] + b"\xff" * fill + b"\xff\xe0\x00\x02" * segments + jpeg[2:]


def test_a_jpeg_with_many_segments_and_fill_bytes_still_reads() -> None:
    jpeg = encoded("JPEG", (640, 480))
    assert codec.image_size(_with_segments(jpeg, 500, fill=5000)) == (640, 480)


def test_hostile_jpeg_headers_are_refused_not_walked() -> None:
    # 19 MB of 4-byte APP0 segments: refused after MAX_JPEG_SEGMENTS, the rest never visited
    # (a 4.7 M-segment walk in Python froze the event loop for over a second)
    jpeg = encoded("JPEG", (64, 64))
    hostile = _with_segments(jpeg, 19_000_000 // 4)
    with pytest.raises(ImageError, match="more than 1024 segments"):
        codec.image_size(hostile)
    with pytest.raises(ImageError, match="fill bytes"):
        codec.image_size(jpeg[:2] + b"\xff" * 19_000_000 + jpeg[2:])
    # the limits sit well above real files
    assert codec.image_size(_with_segments(jpeg, codec.MAX_JPEG_SEGMENTS - 10)) == (64, 64)


@pytest.mark.parametrize(
    ("size", "target"),
    [
        ((4000, 3000), (500, 375)),
        ((4000, 3000), (1024, 1024)),
        ((640, 480), (600, 400)),
        ((1999, 1001), (250, 125)),
        ((50, 50), (320, 200)),
    ],
)
def test_decoded_pixels_match_what_pillow_decodes(
    size: tuple[int, int], target: tuple[int, int]
) -> None:
    data = encoded("JPEG", size)
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", target)
        image.load()
        assert codec.decoded_pixels(data, target) == image.size[0] * image.size[1]
    png = encoded("PNG", size)
    assert codec.decoded_pixels(png, target) == size[0] * size[1]


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "CMYK"])
def test_decode_fitted_gives_rgb_of_the_target_size(mode: str) -> None:
    image = Image.new("RGB", (300, 200), (200, 30, 60)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG" if mode == "CMYK" else "PNG")
    fitted = codec.decode_fitted(buffer.getvalue(), (64, 48))
    assert (fitted.mode, fitted.size) == ("RGB", (64, 48))


def test_decode_fitted_refuses_corrupt_bytes() -> None:
    with pytest.raises(ImageError):
        codec.decode_fitted(SAMPLES["png"][:40], (10, 10))


@pytest.mark.parametrize("text", [b"", b"QUJD", b"QUI=", b"QQ==", b"QUJDRA=="])
def test_check_b64_accepts_strict_base64(text: bytes) -> None:
    codec.check_b64(text)
    assert codec.decode_b64(text) is not None


@pytest.mark.parametrize(
    "text", [b"QUJ", b"QU=D", b"Q===", b"QUJD\n", b"QU-_", b"=QUJ", b"QUJ\xff", b"QUJD===="]
)
def test_check_b64_refuses_what_the_strict_decode_refuses(text: bytes) -> None:
    with pytest.raises(codec.ImageError):
        codec.check_b64(text)
    with pytest.raises(codec.ImageError):
        codec.decode_b64(text)
