"""`local-preview`: the built-in offline model, rendering real images with Pillow.

It is the embedded default (a newcomer can call it with no provider key) and the test model:
every image is a real PNG/JPEG/WebP of exactly the requested size, so the whole pipeline
(size read-back, per-megapixel pricing, transcoding, streaming) is exercised offline.

    (prompt, seed, width, height, index) ──sha256──▶ 4 corner colours + 3 disc colours
        ──▶ 2x2 image upscaled bilinearly (a smooth 4-colour gradient, ~1 ms at 1024²)
        ──▶ discs, the prompt and "image i/n · seed" drawn on top
        ──▶ encoded directly in `request.output_format` (no transcode later)

The same inputs always give the same bytes; without a seed a random one is drawn, so two
calls differ. For edits the first reference image, resized to the output size, replaces
the gradient and is tinted with the image's colour: it is decoded once per request, directly
at the output size (JPEG at 1/2..1/8 scale via `draft`), and shared by all n images. When
streaming with `partial_images`, the first image is drawn early and sent as that many
previews, blurred less each time (the provider's `latency_ms` is spread over them).
Decoding, rendering and encoding run in the process's image work pool (`app.images.work`),
each job stating its pixels first, so concurrent worst-case edits queue under the megapixel
budget instead of multiplying memory, and the event loop is never blocked.

Provider options: `latency_ms` sleeps before rendering, to simulate a remote provider in
tests and benchmarks.
"""

from __future__ import annotations

import hashlib
import secrets
import textwrap
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Final

import anyio
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from app.adapters.base import (
    AdapterContext,
    AdapterResult,
    ImageRequest,
    PartialSink,
    UpstreamImage,
)
from app.adapters.concurrency import settle, successes
from app.catalog.schema import OutputFormat, ProviderConfig
from app.errors import InvalidParameter, InvalidRequest
from app.images.codec import ImageError, decode_fitted, decoded_pixels, encode

DEFAULT_SIZE: Final = (1024, 1024)
#: a guard against absurd sizes reaching Pillow (64 MP); the catalog normally limits first
MAX_SIDE: Final = 8192

Colour = tuple[int, int, int]


class LocalPreviewAdapter:
    """Renders `request.n` distinct images in-process; needs no credentials."""

    def __init__(self, provider: ProviderConfig, context: AdapterContext) -> None:
        self._latency_s = float(provider.options.get("latency_ms", 0)) / 1000
        self._work = context.image_work

    async def generate(
        self,
        request: ImageRequest,
        *,
        upstream_model: str,
        on_partial: PartialSink | None = None,
    ) -> AdapterResult:
        width, height = requested_size(request)
        pixels = width * height
        seed = request.seed if request.seed is not None else secrets.randbits(31)
        work = self._work
        background: Image.Image | None = None
        if request.images:  # decoded once, at the output size, shared by every image
            reference = request.images[0]
            try:
                decoded = decoded_pixels(reference, (width, height))
                background = await work.run(
                    decoded + pixels, decode_fitted, reference, (width, height)
                )
            except ImageError as exc:  # truncated or corrupt despite valid magic bytes
                raise InvalidRequest(
                    "the reference image cannot be decoded", code="INVALID_IMAGE"
                ) from exc

        def draw_one(index: int) -> Image.Image:
            return draw(
                prompt=request.prompt,
                seed=seed,
                width=width,
                height=height,
                index=index,
                n=request.n,
                background=background,
            )

        partials = request.partial_images if on_partial is not None else 0
        # The latency is spread over the previews, as a remote model's progress would be.
        pause = self._latency_s / (partials + 1)
        if partials and on_partial is not None:
            first = await work.run(pixels * 2, draw_one, 0)
            for stage in range(partials):
                await anyio.sleep(pause)
                fmt = request.output_format
                await on_partial(await work.run(pixels * 2, blurred, first, stage, fmt))
        if pause > 0:
            await anyio.sleep(pause)

        def render(index: int) -> bytes:
            return encode(draw_one(index), request.output_format)

        def render_one(index: int) -> Callable[[], Awaitable[bytes]]:
            # the drawing and its encoder's buffers: about two images' worth at once
            return lambda: work.run(pixels * 2, render, index)

        images = successes(await settle([render_one(i) for i in range(request.n)]))
        return AdapterResult(images=[UpstreamImage(data=data) for data in images])


def requested_size(request: ImageRequest) -> tuple[int, int]:
    """`width`/`height` params (pixel models), else `size` "WxH", else 1024x1024."""
    width, height = request.params.get("width"), request.params.get("height")
    if isinstance(width, int) and isinstance(height, int):
        size = (width, height)
    else:
        size = _parse_wxh(request.size) or DEFAULT_SIZE
    if not all(1 <= side <= MAX_SIDE for side in size):
        raise InvalidParameter(
            f"local-preview renders sides of 1..{MAX_SIDE} pixels, not {size[0]}x{size[1]}",
            param="size",
        )
    return size


def _parse_wxh(size: str | None) -> tuple[int, int] | None:
    # Preset values such as "auto" or "auto_2K" carry no pixels: fall back to the default.
    if not size:
        return None
    width, sep, height = size.lower().partition("x")
    if sep and width.isdigit() and height.isdigit():
        return int(width), int(height)
    return None


def draw(
    *,
    prompt: str,
    seed: int,
    width: int,
    height: int,
    index: int,
    n: int,
    background: Image.Image | None = None,
) -> Image.Image:
    """One deterministic image, not yet encoded. Blocking."""
    digest = hashlib.sha256(f"{seed}\x00{width}x{height}\x00{index}\x00{prompt}".encode()).digest()
    colours = [(digest[i], digest[i + 1], digest[i + 2]) for i in range(0, 21, 3)]
    if background is None:
        image = _gradient(colours[:4], width, height)
    else:
        image = Image.blend(background, Image.new("RGB", (width, height), colours[0]), 0.3)
    canvas = ImageDraw.Draw(image)
    _discs(canvas, digest, colours[4:], width, height)
    _caption(canvas, prompt, f"image {index + 1}/{n} · seed {seed}", width, height)
    return image


def blurred(image: Image.Image, stage: int, fmt: OutputFormat) -> bytes:
    """Partial image `stage` (0-based) of `image`: blurred, less at each stage. Blocking."""
    radius = max(1.0, min(image.size) / (8 * 2**stage))
    return encode(image.filter(ImageFilter.GaussianBlur(radius)), fmt)


def _gradient(corners: list[Colour], width: int, height: int) -> Image.Image:
    # A 2x2 image stretched bilinearly from pixel centre to pixel centre is a smooth
    # four-corner gradient (a plain resize would plateau at the corners). Stretching to 1/8
    # scale and resizing up is indistinguishable and 10x cheaper than a full-size transform.
    tile = Image.new("RGB", (2, 2))
    tile.putdata(corners)
    small = tile.transform(
        (max(2, width // 8), max(2, height // 8)),
        Image.Transform.EXTENT,
        (0.5, 0.5, 1.5, 1.5),
        Image.Resampling.BILINEAR,
    )
    return small.resize((width, height), Image.Resampling.BILINEAR)


def _discs(
    draw: ImageDraw.ImageDraw, digest: bytes, colours: list[Colour], width: int, height: int
) -> None:
    short = min(width, height)
    for i, colour in enumerate(colours):
        x = digest[21 + i] * width // 256
        y = digest[24 + i] * height // 256
        r = max(1, short * (4 + digest[27 + i] % 12) // 64)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(255, 255, 255))


def _caption(draw: ImageDraw.ImageDraw, prompt: str, footer: str, width: int, height: int) -> None:
    font_size = max(8, min(width, height) // 28)
    font = _font(font_size)
    chars_per_line = max(8, int(width / (font_size * 0.6)) - 2)
    lines = textwrap.wrap(prompt, chars_per_line, max_lines=4, placeholder=" …") or [""]
    text = "\n".join([*lines, footer])
    margin = max(2, font_size // 2)
    box = draw.multiline_textbbox((margin, margin), text, font=font)
    draw.rectangle(
        (box[0] - margin // 2, box[1] - margin // 2, box[2] + margin // 2, box[3] + margin // 2),
        fill=(0, 0, 0),
    )
    draw.multiline_text((margin, margin), text, font=font, fill=(255, 255, 255))


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled default font, scalable when FreeType is available. Loading it costs
    # ~1 ms, so each size is loaded once.
    return ImageFont.load_default(size)
