"""From upstream bytes to the response the client receives.

Every image, whatever the provider, goes through the same steps once: sniff the real format
from its magic bytes (never trusting the provider's word), transcode when it is not the
requested `output_format` (in a worker thread), read the real size from the header, and
base64-encode it exactly once. The JSON body is assembled around the base64 bytes rather than
passing them through a serializer (base64 never needs JSON escaping), and is never joined: it
stays the pieces it is made of (`ResponseBody`), each image's base64 a view into the provider's
answer, written to the client piece by piece (`app.api.images.respond`). A multi-megabyte image
passed through is therefore held once (the provider's answer) from its arrival to its last
byte sent; only an Idempotency-Key's stored copy joins the pieces.

The body is openai-python's `ImagesResponse` field for field (and the stream events are its
`ImageGenStreamEvent` / `ImageEditStreamEvent`), so clients that validate against the SDK
types accept it: `usage` always carries the token counts (zeros when the provider reports
none) next to our `usage.cost.total_cost`; `size`, `output_format` and `background` describe
the delivered image; `quality` is the value the provider used or the one requested, left out
where it is none of the SDK's values (a model without a quality setting).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from app.adapters.base import AdapterResult, ImageRequest, TokenUsage, UpstreamImage
from app.catalog.schema import OutputFormat
from app.errors import UpstreamError
from app.images import codec
from app.images.work import ImageWorkPool
from app.money import micros_to_json

logger = logging.getLogger(__name__)


#: enough decoded bytes to sniff any format and read PNG / WebP / most JPEG headers; a JPEG
#: whose frame header sits past it (huge EXIF/ICC segments) is measured on the whole image
HEAD_BYTES: Final = 64 * 1024

#: the `quality` values openai-python's `ImagesResponse` accepts; its stream events add "auto"
RESPONSE_QUALITIES: Final = frozenset({"low", "medium", "high", "xhigh", "max"})
EVENT_QUALITIES: Final = RESPONSE_QUALITIES | {"auto"}
BACKGROUNDS: Final = frozenset({"transparent", "opaque"})
#: the largest piece a body is written in: each is copied once more, into the socket's send
#: buffer, and the next is written only once that buffer has drained
WRITE_CHUNK_BYTES: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class ResponseBody:
    """A rendered body as its pieces (each image's base64 uncopied); `bytes()` joins them."""

    parts: tuple[bytes | memoryview, ...]

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)

    def chunks(self, size: int = WRITE_CHUNK_BYTES) -> Iterator[bytes | memoryview]:
        """The body in order, in pieces of at most `size` bytes: small parts joined, large
        ones sliced (views, not copies)."""
        pending: list[bytes | memoryview] = []
        pending_bytes = 0
        for part in self.parts:
            if pending_bytes + len(part) <= size:
                pending.append(part)
                pending_bytes += len(part)
                continue
            if pending_bytes:
                yield b"".join(pending)
            view = memoryview(part)
            whole = len(view) - len(view) % size
            for start in range(0, whole, size):
                yield view[start : start + size]
            pending, pending_bytes = [view[whole:]], len(view) - whole
        if pending_bytes:
            yield b"".join(pending)


#: a whole response as it is carried to the client: one bytes (a stored replay, a stream's
#: events) or a rendered body's pieces
Body = bytes | ResponseBody


@dataclass(frozen=True, slots=True)
class FinishedImage:
    """An image as delivered: in the requested format, measured; bytes and base64 on demand
    (a passed-through base64 answer is never decoded, a transcoded one encoded once)."""

    source: UpstreamImage
    width: int
    height: int
    #: the delivered bytes carry an alpha channel (or a transparent colour)
    has_alpha: bool = False

    @property
    def data(self) -> bytes:
        return self.source.data

    @property
    def b64(self) -> bytes | memoryview:
        return self.source.b64

    @property
    def revised_prompt(self) -> str | None:
        return self.source.revised_prompt

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    def background(self, *claims: str | None) -> str:
        """`opaque` when the bytes have no alpha channel, whatever anyone claims; otherwise
        the first claim that is an SDK value (the provider's word, then the request's), else
        `transparent`."""
        if not self.has_alpha:
            return "opaque"
        return next((claim for claim in claims if claim in BACKGROUNDS), "transparent")


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a settled request produced: its images, what it cost, the upstream's usage and
    the settings the provider says it used."""

    images: list[FinishedImage]
    cost_micros: int
    usage: TokenUsage | None
    quality: str | None = None
    background: str | None = None


def requested_background(request: ImageRequest) -> str | None:
    """`background` as the client sent it (a declared parameter or a forwarded field)."""
    value = request.params.get("background") or request.extra.get("background")
    return value if isinstance(value, str) else None


def reported_quality(allowed: frozenset[str], *claims: str | None) -> str | None:
    """The first claim (the provider's word, then the request's) that the SDK type allows."""
    return next((claim for claim in claims if claim in allowed), None)


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
            image, output_format=output_format, max_pixels=max_pixels, work=work
        )
        if done is not None:
            finished.append(done)
    if not finished:
        raise UpstreamError("The provider returned no usable image.")
    return finished


async def finish_image(
    image: UpstreamImage | bytes,
    *,
    output_format: OutputFormat,
    max_pixels: int,
    work: ImageWorkPool | None = None,
) -> FinishedImage | None:
    """One upstream image (or streamed partial image) normalised; None if it is unusable.

    Sniffing and measuring read a decoded prefix only; an image already in `output_format`
    is delivered as it came (its base64 passed through), anything else is transcoded.
    """
    if isinstance(image, bytes):
        image = UpstreamImage(image)
    try:
        head = image.head(HEAD_BYTES)
        fmt = codec.sniff_format(head)
        if fmt is None:
            logger.warning("upstream returned data that is not an image")
            return None
        try:
            width, height = codec.image_size(head)
        except codec.ImageError:
            if len(head) < HEAD_BYTES:
                raise  # that was the whole image
            width, height = codec.image_size(image.data)
        if width * height > max_pixels:
            raise codec.ImageError(f"{width}x{height} exceeds the pixel limit")
        if fmt != output_format:
            data = await codec.transcode_async(image.data, output_format, work=work)
            image = UpstreamImage(data, image.revised_prompt)
        has_alpha = codec.has_alpha(head if fmt == output_format else image.head(HEAD_BYTES))
    except (codec.ImageError, OSError, ValueError) as exc:
        logger.warning("dropping an unusable upstream image: %s", exc)
        return None
    return FinishedImage(image, width, height, has_alpha)


def usage_block(cost_micros: int, usage: TokenUsage | None) -> dict[str, Any]:
    """The SDK's `Usage` (every token field, zeros when the provider reported none) plus
    `cost.total_cost`, the exact amount charged."""
    usage = usage or TokenUsage()
    block: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": _token_details(usage.input_tokens_details),
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.output_tokens_details:
        block["output_tokens_details"] = _token_details(usage.output_tokens_details)
    block["cost"] = {"total_cost": micros_to_json(cost_micros)}
    return block


def _token_details(details: dict[str, int] | None) -> dict[str, int]:
    # the SDK requires both `image_tokens` and `text_tokens`; other modalities ride along
    return {"image_tokens": 0, "text_tokens": 0, **(details or {})}


def render_body(
    *,
    model_id: str,
    request: ImageRequest,
    response_format: str,
    delivery: Delivery,
    created: int | None = None,
) -> ResponseBody:
    """The `ImagesResponse` JSON, with each image's base64 spliced in as raw bytes."""
    images, output_format = delivery.images, request.output_format
    first = images[0]
    fields: dict[str, Any] = {
        "created": created or int(time.time()),
        "model": model_id,
        "size": first.size,
        "output_format": output_format,
        "background": first.background(delivery.background, requested_background(request)),
    }
    quality = reported_quality(RESPONSE_QUALITIES, delivery.quality, request.quality)
    if quality is not None:
        fields["quality"] = quality
    head = orjson.dumps(fields)
    if response_format == "url":
        opening = b'{"url":"data:image/' + output_format.encode() + b";base64,"
    else:
        opening = b'{"b64_json":"'
    # the (multi-megabyte) base64 of each image is a part of its own, never copied here
    parts: list[bytes | memoryview] = [head[:-1], b',"data":[']
    for index, image in enumerate(images):
        extra: dict[str, Any] = {"index": index}
        if image.revised_prompt is not None:
            extra["revised_prompt"] = image.revised_prompt
        if index:
            parts.append(b",")
        # `extra` serialises as {"index":0,...}: drop its "{" and continue our object with it
        parts += (opening, image.b64, b'",', orjson.dumps(extra)[1:])
    tail = orjson.dumps({"usage": usage_block(delivery.cost_micros, delivery.usage)})
    parts += (b"],", tail[1:])
    return ResponseBody(tuple(parts))
