"""What an edit brings beyond a generation: reference images (and a mask), checked once.

Both spellings of `POST /v1/images/edits` end up as one `RequestBody`:
- multipart (the SDKs): `app.api.multipart` reads the parts, size-limited, into the text fields
  (strings, coerced later by the model's schema) and the raw bytes of `image` / `image[]`
  (in order, both names mixed) and `mask`;
- JSON: `{"images": [{"image_url": "data:image/png;base64,..."}], "mask": {"image_url": ...}}`
  (`edit_body_from_json`). Only inline `data:` URIs: the gateway never fetches a URL a client
  names (that would let callers make it request internal addresses).

`check_images` then trusts nothing the client said about the files: each is at most
`max_image_bytes` (413 `PAYLOAD_TOO_LARGE`; the multipart reader already refused bigger parts
mid-stream), its format comes from the magic bytes (PNG, JPEG or WebP, else 400
`INVALID_IMAGE`) and its pixel count from the header, refused above `max_image_pixels` before
anything decodes it (400 `INVALID_IMAGE`: decompression bombs).

An Idempotency-Key's fingerprint (`edit_fingerprint`) is taken over the fields and the images'
digests, not over the raw multipart body, whose boundary differs on every retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import InvalidParameter, InvalidRequest, PayloadTooLarge
from app.images import codec
from app.images.codec import ImageError, ImageTooLarge


@dataclass(frozen=True, slots=True)
class RequestBody:
    """A request's fields, plus an edit's reference images (None for a generation)."""

    fields: Mapping[str, Any]
    images: list[bytes] | None = None
    mask: bytes | None = None
    #: a multipart form: numbers and booleans arrive as strings
    from_form: bool = False


def invalid_image(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, code="INVALID_IMAGE", param=param)


class JsonUpload:
    """A JSON edit body as read off the wire, handed over once.

    `take()` gives the buffer and forgets it, so the raw bytes are freed the moment they are
    parsed instead of living as long as the request: a 60 MB body is then held once as bytes
    and once as parsed text only while `orjson` runs, never next to its decoded images.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: bytearray) -> None:
        self._raw = raw

    def take(self) -> bytearray:
        raw, self._raw = self._raw, bytearray()
        return raw


def edit_body_from_json(body: dict[str, Any], *, max_image_bytes: int) -> RequestBody:
    """A JSON edit body: `images` as `[{"image_url": "data:..."}]`, `mask` likewise.

    The data URIs leave `body` as they are decoded, one at a time, so each one's text is
    freed as soon as its bytes exist; one whose text is longer than `max_image_bytes` can
    decode to is refused (413) before anything is decoded.
    """
    images = body.pop("images", None)
    mask = _mask(body.pop("mask", None), max_image_bytes)
    if images is None:
        return RequestBody(body, images=[], mask=mask)
    if not isinstance(images, list):
        raise InvalidParameter(
            'images must be a list of {"image_url": "data:image/...;base64,..."} objects',
            param="images",
        )
    decoded: list[bytes] = []
    for index, item in enumerate(images):
        images[index] = None  # `item` is the last reference to this image's text
        decoded.append(_data_uri(item, f"images[{index}]", max_image_bytes))
        del item
    return RequestBody(body, images=decoded, mask=mask)


def _mask(value: Any, max_image_bytes: int) -> bytes | None:
    return None if value is None else _data_uri(value, "mask", max_image_bytes)


def _data_uri(item: Any, param: str, max_image_bytes: int) -> bytes:
    uri = item.get("image_url") if isinstance(item, dict) else item
    if isinstance(uri, dict):  # {"image_url": {"url": ...}}, the chat-completions spelling
        uri = uri.get("url")
    if not isinstance(uri, str):
        raise InvalidParameter(
            f'{param} must be {{"image_url": "data:image/...;base64,..."}}', param=param
        )
    if not uri.startswith("data:"):
        raise invalid_image(
            f"{param}: only inline data: URIs are accepted, not links to fetch", param
        )
    try:
        return codec.decode_data_uri(uri, max_bytes=max_image_bytes)
    except ImageTooLarge as exc:
        what = "the mask" if param == "mask" else param
        raise PayloadTooLarge(
            f"{what} is {exc.size} bytes, over the limit of {exc.limit} bytes", param=param
        ) from exc
    except ImageError as exc:
        raise invalid_image(f"{param}: {exc}", param) from exc


def check_images(body: RequestBody, *, max_bytes: int, max_pixels: int) -> None:
    """Every reference image and the mask must be a PNG, JPEG or WebP of at most `max_bytes`
    (413 beyond) and `max_pixels` (400)."""
    named = [("image", data) for data in body.images or ()]
    if body.mask is not None:
        named.append(("mask", body.mask))
    for index, (param, data) in enumerate(named):
        what = "the mask" if param == "mask" else f"image {index + 1}"
        if len(data) > max_bytes:
            raise PayloadTooLarge(
                f"{what} is {len(data)} bytes, over the limit of {max_bytes} bytes", param=param
            )
        if codec.sniff_format(data) is None:
            raise invalid_image(f"{what} is not a PNG, JPEG or WebP image", param)
        try:
            width, height = codec.image_size(data)
        except ImageError as exc:
            raise invalid_image(f"{what} cannot be read: {exc}", param) from exc
        if width * height > max_pixels:
            raise invalid_image(
                f"{what} is {width}x{height} pixels, over the limit of {max_pixels} pixels",
                param,
            )


def edit_fingerprint(body: RequestBody) -> bytes:
    """Stable bytes for the Idempotency-Key hash: fields plus the images' sha256."""
    fields = {key: value for key, value in body.fields.items() if key not in ("images", "mask")}
    return orjson.dumps(
        {
            "fields": fields,
            "form": body.from_form,
            "images": [hashlib.sha256(data).hexdigest() for data in body.images or ()],
            "mask": None if body.mask is None else hashlib.sha256(body.mask).hexdigest(),
        },
        option=orjson.OPT_SORT_KEYS,
    )
