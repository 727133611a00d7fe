"""The Stability AI adapter: Stable Image Ultra / Core and Stable Diffusion 3.x (REST v2beta).

    ImageRequest ──build_call──▶ UpstreamCall  POST {base_url}/v2beta/stable-image/...
                                   generate/ultra | generate/core | generate/sd3 (+ `model`)
                                   edit/inpaint   (an edit with a mask)
                                 multipart/form-data, `Accept: application/json`
                 ──send (shared httpx client, one deadline for the whole call)──▶
    2xx body     ──parse_response──▶ {"image": <base64>, "finish_reason", "seed"} ──▶ bytes
                                     finish_reason CONTENT_FILTERED ──▶ ContentBlocked
    4xx/5xx      ──map_error──▶ {"id", "name", "errors": [...]} ──▶ ContentBlocked |
                                UpstreamError | UpstreamUnavailable | UpstreamTimeout

`build_call`, `parse_response` and `map_error` are pure, so the wire format is unit-tested
without I/O; `StabilityAdapter` only wires them to the network.

Wire decisions (contract: Stability's REST API v2beta reference, platform.stability.ai/docs/
api-reference, "Stable Image" generate ultra / core / sd3 and edit inpaint; as mirrored in the
OpenAPI-generated client aj-foster/open-api-generator `stability-ai/generate.ex`,
`content_moderation_response.ex`):
- One image per call, so `n` fans out into `n` concurrent calls (seed + i when a seed is
  given, so the images differ); whatever succeeded is returned.
- The upstream model picks the endpoint: `ultra` / `core` (or `stable-image-ultra` /
  `stable-image-core`) have their own paths; anything else (`sd3.5-large`, `sd3.5-medium`,
  `sd3.5-large-turbo`...) goes to `generate/sd3` with the form field `model`.
- Every field is a multipart part (the API refuses other bodies), text fields without a
  filename, so a text-to-image call is multipart too.
- Sizing is aspect style: the declared `aspect_ratio` when it is one Stability supports, else
  the supported ratio nearest to `request.size` ("WxH", log scale), else none (API: 1:1).
  Image-to-image and inpaint keep the input image's shape, so no ratio is sent there.
- `output_format` is sent as asked, except SD3, which only makes png/jpeg: webp is asked as
  png and transcoded by the image service.
- Edits: with a mask, `edit/inpaint` (image + mask); without, image-to-image on the model's
  own endpoint (`image` + `strength`, `mode=image-to-image` for SD3; `strength` from the
  declared parameter or `extra`, default 0.5). Core has no image-to-image: InvalidParameter.
- Masks mean the opposite things: OpenAI's edits edit where the mask is transparent, Stability
  inpaints where it is white (black = keep, grey = partial strength). A mask with an alpha
  channel is therefore turned into Stability's grayscale (255 - alpha) once per request, in a
  worker thread; a mask without alpha is taken as Stability-style already and sent as is.
- Other declared params (`negative_prompt`, `style_preset`...) and the client's undeclared
  fields (`extra`) are forwarded as form fields, under the fields this adapter owns.
- Moderation comes two ways: a refused request (HTTP 403, `name: content_moderation`) and a
  200 whose `finish_reason` is `CONTENT_FILTERED` (the image is blurred): both are
  ContentBlocked, and a filtered image is never delivered.
- Auth: `Authorization: Bearer <api_key>`; provider `headers` are sent last and win.
"""

from __future__ import annotations

import io
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

import orjson
from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError

from app.adapters.base import (
    AdapterContext,
    AdapterResult,
    ImageRequest,
    PartialSink,
    UpstreamImage,
)
from app.adapters.concurrency import settle, successes
from app.adapters.upstream_http import (
    deadline,
    host_of,
    read_limited,
    redact,
    status_error,
    transport_errors,
)
from app.catalog.schema import ProviderConfig
from app.errors import (
    ContentBlocked,
    GatewayError,
    InvalidParameter,
    UpstreamError,
)
from app.images.codec import ImageError, decode_b64, decoded_pixels, encode, sniff_format

DEFAULT_BASE_URL: Final = "https://api.stability.ai"
ASPECT_RATIOS: Final = ("1:1", "16:9", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
DEFAULT_STRENGTH: Final = 0.5
MAX_SEED: Final = 4294967294
#: never forwarded from params/extra: sizing is translated, the rest is owned here
RESERVED_FIELDS: Final = frozenset(
    {"size", "width", "height", "aspect_ratio", "resolution", "image_size"}
    | {"model", "prompt", "n", "seed", "output_format", "mode", "strength", "quality"}
    | {"image", "image[]", "mask", "user", "stream", "partial_images", "response_format"}
)
_PATHS: Final = {
    "ultra": "generate/ultra",
    "stable-image-ultra": "generate/ultra",
    "core": "generate/core",
    "stable-image-core": "generate/core",
}
_SD3_FORMATS: Final = frozenset({"png", "jpeg"})
_FILTERED: Final = "CONTENT_FILTERED"
_MODERATION: Final = "content_moderation"
_JSON_OVERHEAD_BYTES: Final = 64 * 1024

#: one multipart part: (filename or None for a text field, content, content type or None)
Part = tuple[str, tuple[str | None, bytes, str | None]]


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One HTTP request, fully built: every field a multipart part."""

    url: str
    headers: dict[str, str]
    parts: list[Part]


def build_call(
    request: ImageRequest,
    *,
    upstream_model: str,
    provider: ProviderConfig,
    seed: int | None = None,
) -> UpstreamCall:
    """The HTTP request for one image (`seed` overrides the request's: fan-out)."""
    path = _PATHS.get(upstream_model.lower(), "generate/sd3")
    sd3 = path == "generate/sd3"
    fields: dict[str, str] = {
        key: _form_value(value)
        for key, value in (*request.extra.items(), *request.params.items())
        if key not in RESERVED_FIELDS and value is not None
    }
    fields["prompt"] = request.prompt
    if sd3:
        fields["model"] = upstream_model
    seed = request.seed if seed is None else seed
    if seed is not None:
        fields["seed"] = str(seed)
    fmt = request.output_format
    fields["output_format"] = "png" if sd3 and fmt not in _SD3_FORMATS else fmt

    files: list[Part] = []
    if request.images and request.mask is not None:
        path = "edit/inpaint"
        fields.pop("model", None)
        files = [_file("image", request.images[0]), _file("mask", request.mask)]
    elif request.images:
        if path == "generate/core":
            raise InvalidParameter(
                "Stable Image Core cannot edit an image without a mask", param="image"
            )
        fields["strength"] = _form_value(_strength(request))
        if sd3:
            fields["mode"] = "image-to-image"
        files = [_file("image", request.images[0])]
    else:
        aspect = aspect_ratio(request)
        if aspect is not None:
            fields["aspect_ratio"] = aspect

    base_url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/")
    headers = {"Accept": "application/json", **_auth_headers(provider), **provider.headers}
    parts: list[Part] = [(key, (None, value.encode(), None)) for key, value in fields.items()]
    return UpstreamCall(f"{base_url}/v2beta/stable-image/{path}", headers, parts + files)


def aspect_ratio(request: ImageRequest) -> str | None:
    """The declared `aspect_ratio` if Stability takes it, else the nearest to `size`."""
    declared = request.params.get("aspect_ratio")
    if isinstance(declared, str) and declared in ASPECT_RATIOS:
        return declared
    ratio = _ratio(declared) if isinstance(declared, str) else None
    if ratio is None and request.size is not None:
        width, sep, height = request.size.partition("x")
        if sep and width.isdigit() and height.isdigit() and int(width) and int(height):
            ratio = int(width) / int(height)
    if ratio is None:
        return None
    target = math.log(ratio)
    return min(ASPECT_RATIOS, key=lambda value: abs(math.log(_ratio(value) or 1) - target))


def _ratio(value: str) -> float | None:
    width, sep, height = value.partition(":")
    try:
        return float(width) / float(height) if sep and float(height) and float(width) else None
    except ValueError:
        return None


def _strength(request: ImageRequest) -> float:
    value = request.params.get("strength", request.extra.get("strength"))
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return DEFAULT_STRENGTH


def stability_mask(mask: bytes) -> bytes:
    """An OpenAI-style mask (transparent = edit) as Stability's (white = edit, black = keep)."""
    try:
        with Image.open(io.BytesIO(mask)) as image:
            if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
                return mask
            alpha = image.convert("RGBA").getchannel("A")
    except (OSError, ValueError) as exc:  # Pillow's "cannot identify" is an OSError
        raise InvalidParameter("the mask is not a readable image", param="mask") from exc
    return encode(alpha.point(lambda a: 255 - a), "png")


def _auth_headers(provider: ProviderConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}


def _form_value(value: Any) -> str:
    # Multipart fields are strings: JSON spelling for numbers, booleans and structures.
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _file(part: str, data: bytes) -> Part:
    fmt = sniff_format(data) or "png"
    return part, (f"{part}.{fmt}", data, f"image/{fmt}")


class _WireImage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    image: str | None = None
    finish_reason: str | None = None
    seed: int | None = None


def parse_response(body: bytes, headers: Mapping[str, str]) -> bytes:
    """A 2xx answer -> the image bytes; a content-filtered image -> ContentBlocked.

    JSON is what we ask for; raw image bytes (`Accept: image/*` style, the finish reason in
    a `finish-reason` header) are accepted too, in case a proxy in between ignores Accept.
    """
    if headers.get("content-type", "").startswith("image/"):
        if headers.get("finish-reason", "").upper() == _FILTERED:
            raise _filtered()
        if sniff_format(body) is None:
            raise UpstreamError("provider answered with bytes that are not an image")
        return body
    try:
        wire = _WireImage.model_validate_json(body)
    except ValidationError as exc:
        raise UpstreamError(
            "provider answered with something that is not an image response"
        ) from exc
    if (wire.finish_reason or "").upper() == _FILTERED:
        raise _filtered()
    if not wire.image:
        raise UpstreamError("provider answered without any image")
    try:
        return decode_b64(wire.image)
    except ImageError as exc:
        raise UpstreamError("provider returned invalid base64 image data") from exc


def _filtered() -> ContentBlocked:
    return ContentBlocked("the provider's content filter withheld the generated image")


def map_error(
    status: int, headers: Mapping[str, str], body: bytes, *, host: str, api_key: str | None
) -> GatewayError:
    """A non-2xx upstream answer -> the gateway error the client (and the router) sees."""
    name, message = _error_fields(body)
    detail = redact(message, [api_key]) or "no message"
    if name == _MODERATION and 400 <= status < 500:
        # Stability refuses moderated content with 403: check it before the credentials rule
        return ContentBlocked(detail)
    return status_error(status, headers, host=host, detail=detail)


def _error_fields(body: bytes) -> tuple[str | None, str]:
    """(name, message) of a Stability error `{"id", "name", "errors": [...]}`, leniently."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, body[:200].decode("utf-8", "replace")
    if not isinstance(payload, dict):
        return None, str(payload)
    name = payload.get("name")
    errors = payload.get("errors")
    if isinstance(errors, list) and errors:
        message = "; ".join(str(e) for e in errors)
    else:
        message = str(payload.get("message") or name or "")
    return (name if isinstance(name, str) else None), message


class StabilityAdapter:
    """Calls Stability AI's Stable Image REST API through the shared client."""

    def __init__(self, provider: ProviderConfig, context: AdapterContext) -> None:
        self._provider = provider
        self._context = context
        self._host = host_of(provider.base_url or DEFAULT_BASE_URL)
        self._timeout_s = provider.timeout_s

    async def generate(
        self,
        request: ImageRequest,
        *,
        upstream_model: str,
        on_partial: PartialSink | None = None,
    ) -> AdapterResult:
        # Stability has no partial images. One deadline for the whole call: httpx's own
        # timeout is per read, so a server trickling bytes would otherwise never time out.
        def one(index: int) -> Callable[[], Awaitable[UpstreamImage]]:
            seed = None if request.seed is None else (request.seed + index) % (MAX_SEED + 1)
            return lambda: self._call(request, upstream_model, seed=seed)

        if request.images and request.mask is not None:
            mask = request.mask
            # the conversion decodes the mask: in the pool, under the megapixel budget
            # (RGBA copy + alpha channel: about twice its pixels at once)
            try:
                pixels = 2 * decoded_pixels(mask)
            except ImageError as exc:
                raise InvalidParameter("the mask is not a readable image", param="mask") from exc
            converted = await self._context.image_work.run(pixels, stability_mask, mask)
            request = replace(request, mask=converted)
        with deadline(self._host, self._timeout_s):
            outcomes = await settle([one(i) for i in range(request.n)])
        return AdapterResult(images=successes(outcomes))

    async def _call(
        self, request: ImageRequest, upstream_model: str, *, seed: int | None
    ) -> UpstreamImage:
        call = build_call(
            request, upstream_model=upstream_model, provider=self._provider, seed=seed
        )
        body_limit = self._context.max_download_bytes * 4 // 3 + _JSON_OVERHEAD_BYTES
        with transport_errors(self._host, self._timeout_s):
            async with self._context.http.stream(
                "POST", call.url, headers=call.headers, files=call.parts, timeout=self._timeout_s
            ) as response:
                body = await read_limited(response, body_limit, what=f"answer from {self._host}")
        if not response.is_success:
            raise map_error(
                response.status_code,
                response.headers,
                body,
                host=self._host,
                api_key=self._provider.api_key,
            )
        return UpstreamImage(parse_response(body, response.headers))
