"""What an edit brings beyond a generation: reference images (and a mask), checked once.

Both spellings of `POST /v1/images/edits` end up as one `RequestBody`:
- multipart (the SDKs): `app.api.multipart` reads the parts, size-limited, into the text fields
  (strings, coerced later by the model's schema) and the raw bytes of `image` / `image[]`
  (in order, both names mixed) and `mask`;
- JSON: `{"images": [{"image_url": "data:image/png;base64,..."}], "mask": {"image_url": ...}}`
  (`app.api.json_edit` reads the body, `edit_body_from_json` checks it). Only inline `data:`
  URIs: the gateway never fetches a URL a client names (that would let callers make it
  request internal addresses). Their shape and size (from their length: 413 over
  `max_image_bytes`) are checked while reading; they are base64-decoded only once the
  request is admitted and paid for (`RequestBody.decoded`), each URI's text freed as its
  bytes appear.

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
from typing import Any, cast

import orjson

from app.errors import InvalidParameter, InvalidRequest, PayloadTooLarge
from app.images import codec
from app.images.codec import MAX_DATA_URI_HEADER, ImageError


class RawText:
    """A long JSON string as it arrived (bytes, no escapes in it), set aside by the body
    reader (`app.api.json_edit`) instead of becoming a Python `str`: a data URI."""

    __slots__ = ("data",)

    def __init__(self, data: bytearray) -> None:
        self.data = data


@dataclass(slots=True)
class EncodedImage:
    """A JSON edit's data URI, checked for shape and size but not decoded yet."""

    param: str
    #: the URI's text (a short one, or one given to `edit_body_from_json` as a `str`) or its
    #: bytes as they arrived; None once decoded (the text is freed as its bytes appear)
    uri: str | bytearray | None
    #: where the base64 payload starts
    start: int

    def decode(self) -> bytes:
        uri, self.uri = self.uri, None
        assert uri is not None, "an encoded image is decoded once"
        try:
            if isinstance(uri, str):
                return codec.decode_b64(uri[self.start :])
            # a view of the payload, not a copy of it: `decode_b64` (binascii) reads any
            # bytes-like object
            return codec.decode_b64(cast(bytes, memoryview(uri)[self.start :]))
        except ImageError as exc:
            raise invalid_image(f"{self.param}: {exc}", self.param) from exc


@dataclass(slots=True)
class EncodedUploads:
    """A JSON edit's images and mask as data URIs: `decode()` them once paid for."""

    images: list[EncodedImage]
    mask: EncodedImage | None

    def decode(self) -> tuple[list[bytes], bytes | None]:
        """The images' and the mask's bytes, each URI's text freed as its bytes appear."""
        images: list[bytes] = []
        while self.images:
            images.append(self.images.pop(0).decode())
        mask, self.mask = self.mask, None
        return images, None if mask is None else mask.decode()


@dataclass(frozen=True, slots=True)
class RequestBody:
    """A request's fields, plus an edit's reference images (None for a generation).

    A JSON edit arrives with its data URIs still encoded (`encoded`): until they are decoded
    (`decoded()`, once the request is admitted and paid for), `images` holds one empty
    placeholder per image and `mask` an empty one if there is a mask, which is all that
    validation and pricing read (how many; whether there is a mask).
    """

    fields: Mapping[str, Any]
    images: list[bytes] | None = None
    mask: bytes | None = None
    #: a multipart form: numbers and booleans arrive as strings
    from_form: bool = False
    #: a JSON edit's data URIs, not decoded yet
    encoded: EncodedUploads | None = None

    def decoded(self) -> RequestBody:
        """This body with its data URIs decoded (400 `INVALID_IMAGE` for bad base64)."""
        if self.encoded is None:
            return self
        images, mask = self.encoded.decode()
        return RequestBody(self.fields, images=images, mask=mask)


def invalid_image(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, code="INVALID_IMAGE", param=param)


def edit_body_from_json(body: dict[str, Any], *, max_image_bytes: int) -> RequestBody:
    """A JSON edit body: `images` as `[{"image_url": "data:..."}]`, `mask` likewise.

    Each data URI is checked for its shape (an inline `data:...;base64,` URI, never a link
    to fetch) and its size, from its length alone (413 over `max_image_bytes`); nothing is
    decoded here: that waits for the request to be paid for (`RequestBody.decoded`).
    """
    images = body.pop("images", None)
    raw_mask = body.pop("mask", None)
    mask = None if raw_mask is None else _data_uri(raw_mask, "mask", max_image_bytes)
    if images is None:
        images = []
    if not isinstance(images, list):
        raise InvalidParameter(
            'images must be a list of {"image_url": "data:image/...;base64,..."} objects',
            param="images",
        )
    encoded = [
        _data_uri(item, f"images[{index}]", max_image_bytes) for index, item in enumerate(images)
    ]
    images.clear()
    return RequestBody(
        body,
        images=[b""] * len(encoded),
        mask=None if mask is None else b"",
        encoded=EncodedUploads(encoded, mask),
    )


def _data_uri(item: Any, param: str, max_image_bytes: int) -> EncodedImage:
    uri = item.get("image_url") if isinstance(item, dict) else item
    if isinstance(uri, dict):  # {"image_url": {"url": ...}}, the chat-completions spelling
        uri = uri.get("url")
    if isinstance(uri, RawText):
        uri = uri.data
    if not isinstance(uri, str | bytearray):
        raise InvalidParameter(
            f'{param} must be {{"image_url": "data:image/...;base64,..."}}', param=param
        )
    head = uri[:MAX_DATA_URI_HEADER]
    if isinstance(head, bytearray):
        head = head.decode("latin-1")
    if not head.startswith("data:"):
        raise invalid_image(
            f"{param}: only inline data: URIs are accepted, not links to fetch", param
        )
    comma = head.find(",")
    if comma < 0 or not head.endswith(";base64", 0, comma):
        raise invalid_image(f"{param}: expected a base64 data: URI", param)
    size = _decoded_size(uri, comma + 1)
    if size > max_image_bytes:
        what = "the mask" if param == "mask" else param
        raise PayloadTooLarge(
            f"{what} is {size} bytes, over the limit of {max_image_bytes} bytes", param=param
        )
    return EncodedImage(param, uri, comma + 1)


def _decoded_size(text: str | bytearray, start: int) -> int:
    """The bytes `text[start:]` decodes to as base64, from its length and padding alone."""
    if isinstance(text, str):
        padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    else:
        padding = 2 if text.endswith(b"==") else 1 if text.endswith(b"=") else 0
    chars = len(text) - start
    return max(0, chars // 4 * 3 + max(0, chars % 4 - 1) - padding)


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
    """Stable bytes for the Idempotency-Key hash: fields plus the images' sha256 (of their
    bytes; of their data URIs' text for a JSON edit, which is not decoded before it is paid
    for: the `form` flag keeps the two spellings apart anyway)."""
    fields = {key: value for key, value in body.fields.items() if key not in ("images", "mask")}
    if body.encoded is not None:
        images = [_uri_digest(image) for image in body.encoded.images]
        mask = None if body.encoded.mask is None else _uri_digest(body.encoded.mask)
    else:
        images = [hashlib.sha256(data).hexdigest() for data in body.images or ()]
        mask = None if body.mask is None else hashlib.sha256(body.mask).hexdigest()
    return orjson.dumps(
        {"fields": fields, "form": body.from_form, "images": images, "mask": mask},
        option=orjson.OPT_SORT_KEYS,
    )


def _uri_digest(image: EncodedImage) -> str:
    uri = image.uri
    assert uri is not None, "fingerprinted before it is decoded"
    return hashlib.sha256(uri.encode() if isinstance(uri, str) else uri).hexdigest()
