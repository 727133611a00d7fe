"""Image bytes in, facts and other bytes out: the one place the gateway touches pixels.

    bytes ──sniff_format──▶ "png" | "jpeg" | "webp" | None      (magic bytes, never names)
          ──image_size───▶ (width, height)                      (header only, no decode)
          ──check_pixels─▶ raise if width*height > max_pixels   (decompression bombs)
          ──transcode────▶ bytes in another format              (full decode; CPU, ~ms)
    str   ──decode_b64───▶ bytes                                (strict alphabet)
    str   ──decode_data_uri / data_uri ◀──▶ bytes / "data:image/png;base64,..."

Everything here runs once per image on the hot path, so the cheap calls stay cheap:
`image_size` reads the few header bytes that carry the dimensions (PNG IHDR, JPEG SOFn,
WebP VP8/VP8L/VP8X) itself, which is ~50x faster than opening the file with Pillow.
`transcode` and `decode_fitted` are the calls that decode pixels; they are CPU-bound and
blocking, so async callers run them in the image work pool (`app.images.work`) under its
megapixel budget, stated beforehand from the header (`decoded_pixels`).

Malformed input raises `ImageError` (a `ValueError`), which knows nothing of HTTP: the
caller decides whether bad bytes are the client's fault (400) or the provider's (502).
`check_pixels` takes that decision as its `error` argument for the same reason.
"""

from __future__ import annotations

import binascii
import io
import struct
from collections.abc import Callable
from typing import Final, Literal

import anyio.to_thread
import pybase64
from PIL import Image

from app.errors import InvalidRequest
from app.images.work import ImageWorkPool

ImageFormat = Literal["png", "jpeg", "webp"]

# Every header is checked against GATEWAY_MAX_IMAGE_PIXELS (`check_pixels`) before anything
# decodes it, and the work pool bounds what is decoded at once; Pillow's own process-wide
# guess (89 MP, a warning, then an error) would contradict the operator's setting.
Image.MAX_IMAGE_PIXELS = None
# Pillow allocates pixels in 16 MiB blocks; glibc serves blocks under its (dynamic, up to
# 32 MiB) mmap threshold from thread heaps that keep freed memory resident, so after one
# big decode each worker thread would hold on to hundreds of MiB. 64 MiB blocks are always
# mmapped and go back to the OS the moment an image is freed.
Image.core.set_block_size(64 * 1024 * 1024)  # type: ignore[attr-defined]

# Measured on a 1024x1024 photo-like image: PNG level 1 encodes in ~60 ms vs ~245 ms at
# Pillow's default 6 for ~35% more bytes; WebP method 1 takes ~40 ms vs ~95 ms at libwebp's
# default 4 for ~1% more bytes. Latency wins on a gateway.
PNG_COMPRESS_LEVEL: Final = 1
WEBP_METHOD: Final = 1
DEFAULT_QUALITY: Final = 90

_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but don't.
_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RSTn, SOI.
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD9)})
MAX_JPEG_FILL: Final = 64 * 1024
#: segments read before a JPEG's frame header; beyond it the file is refused, not walked
MAX_JPEG_SEGMENTS: Final = 1024
#: PNG chunks looked at for `tRNS` before the image data starts (real files carry a handful)
MAX_PNG_CHUNKS_BEFORE_DATA: Final = 64
#: `data:<media type>;base64,` is looked for in this many leading characters only
MAX_DATA_URI_HEADER: Final = 256


class ImageError(ValueError):
    """The bytes (or base64 text) are not an image this gateway can read."""


class ImageTooLarge(ImageError):
    """Base64 text that would decode to more than the limit (nothing was decoded)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


def sniff_format(data: bytes) -> ImageFormat | None:
    """The format from magic bytes; None for anything else (GIF, SVG, text, truncated...)."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone; raises `ImageError` if it cannot be read."""
    fmt = sniff_format(data)
    try:
        if fmt == "png":
            size = _png_size(data)
        elif fmt == "jpeg":
            size = _jpeg_size(data)
        elif fmt == "webp":
            size = _webp_size(data)
        else:
            raise ImageError("not a PNG, JPEG or WebP image")
    except (struct.error, IndexError) as exc:
        raise ImageError(f"truncated or corrupt {fmt} header") from exc
    if size[0] <= 0 or size[1] <= 0:
        raise ImageError(f"{fmt} header declares an empty image")
    return size


def _png_size(data: bytes) -> tuple[int, int]:
    # The first chunk must be IHDR: length(4) type(4) width(4) height(4), big-endian.
    if data[12:16] != b"IHDR":
        raise ImageError("PNG without an IHDR chunk")
    width, height = struct.unpack_from(">II", data, 16)
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    # Attacker-chosen input: the walk is bounded. Fill bytes are skipped by `bytes.lstrip`
    # (C) over at most MAX_JPEG_FILL bytes, never byte by byte in Python, and at most
    # MAX_JPEG_SEGMENTS segments are visited before the frame header (real files carry a few
    # dozen: APPn, DQT, DHT, ICC chunks), so a 19 MB file of 4-byte APP0 segments costs
    # microseconds, not seconds of the event loop.
    i, end = 2, len(data)
    for _ in range(MAX_JPEG_SEGMENTS):
        if i >= end:
            break
        if data[i] != 0xFF:
            raise ImageError("corrupt JPEG marker stream")
        # markers may be padded with 0xFF fill bytes: skipped in C, a bounded window at a time
        window = data[i : i + MAX_JPEG_FILL]
        fill = len(window) - len(window.lstrip(b"\xff"))
        if fill == len(window):
            raise ImageError("JPEG with a run of fill bytes and no marker")
        i += fill
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        (length,) = struct.unpack_from(">H", data, i)
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, i + 3)  # after length + precision
            return width, height
        if marker == 0xD9 or length < 2:  # EOI before any frame, or a nonsense length
            break
        i += length
    else:
        raise ImageError(f"JPEG with more than {MAX_JPEG_SEGMENTS} segments before its frame")
    raise ImageError("JPEG without a frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 3-byte frame tag, start code 9d 01 2a, 14-bit sizes
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageError("corrupt VP8 frame header")
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature 0x2f, then two 14-bit (size - 1) fields
        if data[20] != 0x2F:
            raise ImageError("corrupt VP8L header")
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: flags(4), then 24-bit (canvas size - 1) fields
        if len(data) < 30:
            raise ImageError("truncated VP8X header")
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise ImageError("WebP without a VP8/VP8L/VP8X chunk")


def has_alpha(data: bytes) -> bool:
    """Whether the image carries an alpha channel (or a transparent colour), from its header.

    PNG: colour type 4/6, or a `tRNS` chunk before the first `IDAT`; WebP: the VP8X alpha
    flag or VP8L's alpha-used bit; JPEG never. A header cut short reads as no alpha.
    """
    fmt = sniff_format(data)
    if fmt == "png":
        if len(data) < 26:
            return False
        if data[25] in (4, 6):  # IHDR colour type: grey + alpha, RGBA
            return True
        offset = 8
        for _ in range(MAX_PNG_CHUNKS_BEFORE_DATA):
            if offset + 8 > len(data):
                break
            (length,) = struct.unpack_from(">I", data, offset)
            chunk = data[offset + 4 : offset + 8]
            if chunk == b"tRNS":
                return True
            if chunk == b"IDAT":
                break
            offset += 12 + length
        return False
    if fmt == "webp":
        chunk = data[12:16]
        if chunk == b"VP8X" and len(data) > 20:
            return bool(data[20] & 0x10)
        if chunk == b"VP8L" and len(data) >= 25:
            (bits,) = struct.unpack_from("<I", data, 21)
            return bool((bits >> 28) & 1)
    return False


def _invalid_image(message: str) -> Exception:
    return InvalidRequest(message, code="INVALID_IMAGE")


def check_pixels(
    size: tuple[int, int],
    max_pixels: int,
    *,
    error: Callable[[str], Exception] = _invalid_image,
) -> None:
    """Refuse images whose decoded size would exceed `max_pixels` (decompression bombs).

    `error` builds the exception: the default is a client-side 400 `INVALID_IMAGE`; pass
    `UpstreamError` (or any `message -> Exception` callable) for a provider's output.
    """
    width, height = size
    if width * height > max_pixels:
        raise error(f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")


def decoded_pixels(data: bytes, target: tuple[int, int] | None = None) -> int:
    """How many pixels decoding `data` holds in memory, read for a `target` size.

    JPEG decodes at 1/2, 1/4 or 1/8 scale when the target is that much smaller (libjpeg's
    DCT scaling, Pillow's `draft`; this mirrors its choice of scale); PNG and WebP always
    decode in full. Header-only: nothing is decoded here.
    """
    width, height = image_size(data)
    if target is None or sniff_format(data) != "jpeg":
        return width * height
    scale = _jpeg_draft_scale((width, height), target)
    return -(-width // scale) * -(-height // scale)


def _jpeg_draft_scale(size: tuple[int, int], target: tuple[int, int]) -> int:
    ratio = min(size[0] // max(1, target[0]), size[1] // max(1, target[1]))
    return next((scale for scale in (8, 4, 2) if ratio >= scale), 1)


def decode_fitted(data: bytes, size: tuple[int, int]) -> Image.Image:
    """`data` decoded once, at the smallest scale that still covers `size`, as RGB of `size`.

    Blocking: run it in the image work pool with `decoded_pixels(data, size)`. JPEG uses
    `draft` (decoded at reduced scale). PNG and WebP can only decode in full, so the decoded
    image is box-reduced strip by strip into a small RGB copy: every whole-image operation
    (an RGB conversion, Pillow's alpha premultiplication inside `resize`) would allocate a
    second full-size image, doubling the cost of a decompression bomb.
    """
    try:
        with Image.open(io.BytesIO(data)) as source:
            source.draft("RGB", size)  # a no-op for anything but JPEG
            source.load()
            factor = max(1, min(source.width // size[0], source.height // size[1]))
            reduced = _reduce_in_strips(source, factor)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode image: {exc}") from exc
    return reduced.resize(size, Image.Resampling.BILINEAR)


#: rows of the decoded image converted at once: bounds the temporary copies to a strip
_STRIP_PIXELS: Final = 4_000_000


def _reduce_in_strips(source: Image.Image, factor: int) -> Image.Image:
    width, height = source.size
    rows = max(factor, _STRIP_PIXELS // max(1, width) // factor * factor)
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        strip = source.crop((0, top, width, min(height, top + rows))).convert("RGB")
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    return out


def transcode(
    data: bytes,
    to: ImageFormat,
    *,
    quality: int = DEFAULT_QUALITY,
    max_pixels: int | None = None,
) -> bytes:
    """Re-encode `data` as `to`. Blocking and CPU-bound: async code uses `transcode_async`.

    JPEG has no alpha, so transparent images are flattened onto white (what a viewer would
    show) instead of Pillow's default of dropping alpha, which turns transparent areas black.
    `max_pixels` is checked on the header before any pixel is decoded.
    """
    if max_pixels is not None:
        check_pixels(image_size(data), max_pixels, error=ImageError)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            converted = _for_format(image, to)
    except (OSError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode image: {exc}") from exc
    return encode(converted, to, quality=quality)


async def transcode_async(
    data: bytes,
    to: ImageFormat,
    *,
    quality: int = DEFAULT_QUALITY,
    max_pixels: int | None = None,
    work: ImageWorkPool | None = None,
) -> bytes:
    """`transcode` in the image work pool (or, without one, a worker thread), so the event
    loop keeps serving other requests."""

    def run() -> bytes:
        return transcode(data, to, quality=quality, max_pixels=max_pixels)

    if work is None:
        return await anyio.to_thread.run_sync(run)
    pixels = image_size(data)
    if max_pixels is not None:  # refused before it takes budget
        check_pixels(pixels, max_pixels, error=ImageError)
    return await work.run(pixels[0] * pixels[1], run)


def encode(image: Image.Image, fmt: ImageFormat, *, quality: int = DEFAULT_QUALITY) -> bytes:
    """Encode a Pillow image with the gateway's speed-first settings (shared with renderers)."""
    image = _for_format(image, fmt)
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "jpeg":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "WEBP", quality=quality, method=WEBP_METHOD)
    return buffer.getvalue()


def _for_format(image: Image.Image, fmt: ImageFormat) -> Image.Image:
    """Convert to a mode the target format can store, flattening alpha for JPEG."""
    if fmt == "jpeg":
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            return flat
        return image if image.mode in ("RGB", "L", "CMYK") else image.convert("RGB")
    if image.mode in ("RGB", "RGBA", "L", "LA") or (fmt == "png" and image.mode in ("P", "I")):
        return image
    return image.convert("RGBA" if "transparency" in image.info else "RGB")


def decode_b64(text: str | bytes | memoryview) -> bytes:
    """Strict standard base64 (no whitespace, no URL-safe alphabet); `ImageError` otherwise.

    `binascii.a2b_base64` reads an ASCII `str` in place, where `base64.b64decode` would first
    copy it to bytes: for a client's 20 MB data URI that is one copy fewer held at once.
    """
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: a str with non-ASCII characters
        raise ImageError("invalid base64 image data") from exc
    # strict mode still takes padding beyond the two '=' a 4-character group can carry
    if len(text) % 4 or len(data) < len(text) // 4 * 3 - 2:
        raise ImageError("invalid base64 image data")
    return data


def b64_decoded_size(text: str, start: int = 0) -> int:
    """The bytes `text[start:]` decodes to as base64, from its length and padding alone."""
    chars = len(text) - start
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    return max(0, chars // 4 * 3 + max(0, chars % 4 - 1) - padding)


def check_b64(text: bytes | memoryview) -> None:
    """Raise `ImageError` unless `text` is strict standard base64 (exactly what `decode_b64`
    accepts), keeping nothing: pybase64's SIMD decode with `validate=True` checks 4 MB in
    ~1 ms, where a pure alphabet scan (`bytes.translate`) took ~4 ms."""
    try:
        pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("invalid base64 image data") from exc


def encode_b64(data: bytes) -> str:
    return pybase64.b64encode(data).decode("ascii")


def data_uri(fmt: ImageFormat, b64: str) -> str:
    """`data:image/<fmt>;base64,<b64>`, the inline form of `response_format: url`."""
    return f"data:image/{fmt};base64,{b64}"


def decode_data_uri(uri: str, *, max_bytes: int | None = None) -> bytes:
    """The bytes of a base64 `data:` URI (the media type is ignored: callers sniff).

    Over `max_bytes` (judged from the payload's length, before decoding) raises
    `ImageTooLarge`; the payload is sliced out of `uri` once and decoded in place.
    """
    comma = uri.find(",", 0, MAX_DATA_URI_HEADER)
    if comma < 0 or not uri.startswith("data:") or not uri.endswith(";base64", 0, comma):
        raise ImageError("expected a base64 data: URI")
    size = b64_decoded_size(uri, comma + 1)
    if max_bytes is not None and size > max_bytes:
        raise ImageTooLarge(size, max_bytes)
    return decode_b64(uri[comma + 1 :])
