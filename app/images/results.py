"""From upstream bytes to the response the client receives.

Every image, whatever the provider, goes through the same steps once: sniff the real format
from its magic bytes (never trusting the provider's word), transcode when it is not the
requested `output_format` (in a worker thread), read the real size from the header, and
base64-encode it exactly once. The JSON body is assembled around the base64 bytes rather than
passing them through a serializer (base64 never needs JSON escaping), so a multi-megabyte
image costs one encode and one join.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from app.adapters.base import AdapterResult, TokenUsage
from app.catalog.schema import OutputFormat
from app.errors import UpstreamError
from app.images import codec
from app.images.work import ImageWorkPool
from app.money import micros_to_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FinishedImage:
    data: bytes
    width: int
    height: int
    revised_prompt: str | None = None

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a settled request produced: its images, what it cost, the upstream's usage."""

    images: list[FinishedImage]
    cost_micros: int
    usage: TokenUsage | None


async def finish_images(
    result: AdapterResult,
    *,
    output_format: OutputFormat,
    max_pixels: int,
    work: ImageWorkPool | None = None,
) -> list[FinishedImage]:
    """Normalise the adapter's images; unusable ones are dropped (and not billed)."""
    finished: list[FinishedImage] = []
    for image in result.images:
        done = await finish_image(
            image.data,
            output_format=output_format,
            max_pixels=max_pixels,
            revised_prompt=image.revised_prompt,
            work=work,
        )
        if done is not None:
            finished.append(done)
    if not finished:
        raise UpstreamError("The provider returned no usable image.")
    return finished


async def finish_image(
    data: bytes,
    *,
    output_format: OutputFormat,
    max_pixels: int,
    revised_prompt: str | None = None,
    work: ImageWorkPool | None = None,
) -> FinishedImage | None:
    """One upstream image (or streamed partial image) normalised; None if it is unusable."""
    fmt = codec.sniff_format(data)
    if fmt is None:
        logger.warning("upstream returned %d bytes that are not an image", len(data))
        return None
    try:
        width, height = codec.image_size(data)
        if width * height > max_pixels:
            raise codec.ImageError(f"{width}x{height} exceeds the pixel limit")
        if fmt != output_format:
            data = await codec.transcode_async(data, output_format, work=work)
    except (codec.ImageError, OSError, ValueError) as exc:
        logger.warning("dropping an unusable upstream image: %s", exc)
        return None
    return FinishedImage(data, width, height, revised_prompt)


def usage_block(cost_micros: int, usage: TokenUsage | None) -> dict[str, Any]:
    block: dict[str, Any] = {}
    if usage is not None:
        block.update(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
        )
        if usage.input_tokens_details:
            block["input_tokens_details"] = usage.input_tokens_details
    block["cost"] = {"total_cost": micros_to_json(cost_micros)}
    return block


def render_body(
    *,
    model_id: str,
    images: list[FinishedImage],
    response_format: str,
    output_format: OutputFormat,
    cost_micros: int,
    usage: TokenUsage | None,
    created: int | None = None,
) -> bytes:
    """The `ImagesResponse` JSON, with each image's base64 spliced in as raw bytes."""
    head = orjson.dumps(
        {"created": created or int(time.time()), "model": model_id, "size": images[0].size}
    )
    if response_format == "url":
        opening = b'{"url":"data:image/' + output_format.encode() + b";base64,"
    else:
        opening = b'{"b64_json":"'
    items: list[bytes] = []
    for index, image in enumerate(images):
        extra: dict[str, Any] = {"index": index}
        if image.revised_prompt is not None:
            extra["revised_prompt"] = image.revised_prompt
        # `extra` serialises as {"index":0,...}: drop its "{" and continue our object with it
        items.append(opening + base64.b64encode(image.data) + b'",' + orjson.dumps(extra)[1:])
    tail = orjson.dumps({"usage": usage_block(cost_micros, usage)})
    return head[:-1] + b',"data":[' + b",".join(items) + b"]," + tail[1:]
