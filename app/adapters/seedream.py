"""The BytePlus ModelArk (Volcengine Ark) Seedream adapter: seedream-4.0 / 4.5 image models.

    ImageRequest ──build_call──▶ UpstreamCall (POST {base_url}/images/generations, JSON;
                                               reference images inline as data: URIs)
                 ──send (shared httpx client, one deadline for the whole call)──▶
    2xx body     ──parse_response──▶ b64 bytes | URLs ──download (size-limited)──▶ images
                                     (a batch may mix images and per-image `error` entries)
    4xx/5xx      ──map_error──▶ ContentBlocked (…SensitiveContentDetected, …RiskDetection)
                                | whatever `openai.map_error` makes of the status

Ark's Images API is OpenAI-shaped, so the call and error plumbing (`UpstreamCall`,
`ParsedResponse`, the status mapping of `openai.map_error`, `sum_usage`) is reused; what
differs is written here. Contract: the BytePlus ModelArk "Image generation API" reference
(docs.byteplus.com/en/docs/ModelArk/1541523, mirrored in anongecko/seedream-studio
`references/SEEDREAM-4point5-api-docs.md`), the official SDK's `images.generate`
(volcengine/volcengine-python-sdk `volcenginesdkarkruntime/resources/images/images.py`) and
Ark's error codes (volcengine.com/docs/82379/1299023).

Wire decisions:
- Auth: `Authorization: Bearer <api_key>`; provider `headers` are sent last and win.
- `size` is the model's own: `1K`/`2K`/`4K` (the model picks the aspect from the prompt) or
  `WxH`. Preset models (`image_size`) send the preset verbatim, pixel models `WxH`; a tier
  model with `aspect_ratio: auto` sends its `resolution` tier. `auto` or nothing: no `size`
  (Ark's default, 2048x2048).
- `response_format: b64_json` (saves a download round trip; Ark's default is a 24-hour
  URL, which is still followed, size-limited and without our key, if a server sends one).
  Seedream always renders JPEG; the image service transcodes to `output_format`.
- `watermark: false` unless the model's params or the client's `extra` say otherwise (Ark's
  default stamps "AI generated"). Other declared params and `extra` fields (e.g.
  `optimize_prompt_options`) are forwarded under the fields this adapter owns.
- `seed` is sent only when given, i.e. when the catalog declares it (Ark honours it on
  seedream-3.0 / seededit only). `user` is never forwarded.
- Edits: reference images as `data:image/<fmt>;base64,...` (lowercase format, as Ark
  requires), a string for one image and a list for several (up to 14). Ark has no mask: a
  mask is refused with a 400 on `mask` rather than silently ignored.
- n > 1: by default `n` concurrent calls of one image each (`seed + i` when a seed is set),
  returning what succeeded: the client gets exactly the `n` independent images it asked
  for. `options.n_mode: batch` uses Ark's batch mode instead (`sequential_image_generation:
  auto`, `max_images: n`, capped so references + outputs stay within 15): one call yielding
  a coherent set, but the model decides how many images come back (often 1 for a prompt
  that does not ask for several) and the caller is billed for those delivered. In a batch,
  one image refused by moderation does not fail the others; the call fails only when no
  image came, with the first per-image error (ContentBlocked for moderation).
- Streaming (`stream: true` upstream) is not used: a streaming client gets completed images.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from app.adapters.b64_fields import lift_b64_values
from app.adapters.base import (
    AdapterContext,
    AdapterResult,
    ImageRequest,
    PartialSink,
    TokenUsage,
    UpstreamImage,
)
from app.adapters.concurrency import settle, successes
from app.adapters.openai import (
    RESERVED_FIELDS as OPENAI_RESERVED_FIELDS,
)
from app.adapters.openai import (
    SIZING_FIELDS,
    ParsedImage,
    ParsedResponse,
    UpstreamCall,
    checked_b64,
    sum_usage,
)
from app.adapters.openai import map_error as map_openai_error
from app.adapters.upstream_http import (
    deadline,
    download,
    host_of,
    read_limited,
    redact,
    transport_errors,
)
from app.catalog.schema import ProviderConfig
from app.errors import (
    ContentBlocked,
    GatewayError,
    InvalidParameter,
    UpstreamError,
)
from app.images.codec import data_uri, encode_b64, sniff_format

DEFAULT_BASE_URL: Final = "https://ark.ap-southeast.bytepluses.com/api/v3"
#: Ark's limit per call: reference images + generated images
MAX_IMAGES_PER_CALL: Final = 15
RESERVED_FIELDS: Final = OPENAI_RESERVED_FIELDS | {
    "sequential_image_generation",
    "sequential_image_generation_options",
}
#: sent unless the model's params or the client's extra fields say otherwise
DEFAULTS: Final[dict[str, Any]] = {"watermark": False}
NMode = Literal["fan_out", "batch"]
_N_MODES: Final = ("fan_out", "batch")
# A base64 body is 4/3 of the image bytes; the slack covers the JSON around it.
_JSON_OVERHEAD_BYTES: Final = 64 * 1024


def seedream_size(request: ImageRequest) -> str | None:
    """Ark's `size`: a tier (`2K`) or `WxH`, or None for Ark's default."""
    if request.size is not None and request.size != "auto":
        return request.size
    resolution = request.params.get("resolution")  # tier style, `aspect_ratio: auto`
    return resolution if isinstance(resolution, str) else None


def batch_size(request: ImageRequest, n_mode: NMode) -> int:
    """How many images one call asks for: 1, or `n` in batch mode (within Ark's 15)."""
    if n_mode != "batch":
        return 1
    return max(1, min(request.n, MAX_IMAGES_PER_CALL - len(request.images)))


def build_call(
    request: ImageRequest,
    *,
    upstream_model: str,
    provider: ProviderConfig,
    max_images: int = 1,
    seed: int | None = None,
) -> UpstreamCall:
    """The HTTP request for one upstream call of up to `max_images` images (`seed`
    overrides the request's: fan-out)."""
    body: dict[str, Any] = dict(DEFAULTS)
    body.update(
        (key, value)
        for key, value in (*request.extra.items(), *request.params.items())
        if key not in SIZING_FIELDS and key not in RESERVED_FIELDS and value is not None
    )
    body["model"] = upstream_model
    body["prompt"] = request.prompt
    body["response_format"] = "b64_json"
    size = seedream_size(request)
    if size is not None:
        body["size"] = size
    seed = request.seed if seed is None else seed
    if seed is not None:
        body["seed"] = seed
    if request.images:
        uris = [_data_uri(image) for image in request.images]
        body["image"] = uris[0] if len(uris) == 1 else uris
    if max_images > 1:
        body["sequential_image_generation"] = "auto"
        body["sequential_image_generation_options"] = {"max_images": max_images}

    base_url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/")
    auth = {"Authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}
    return UpstreamCall(f"{base_url}/images/generations", {**auth, **provider.headers}, json=body)


def _data_uri(image: bytes) -> str:
    return data_uri(sniff_format(image) or "png", encode_b64(image))


class _WireError(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: str | None = None
    message: str | None = None


class _WireImage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    b64_json: str | None = None
    url: str | None = None
    error: _WireError | None = None


class _WireUsage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    output_tokens: int = 0
    total_tokens: int = 0


class _WireResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: list[_WireImage] | None = None
    usage: _WireUsage | None = None
    error: _WireError | None = None


def parse_response(body: bytes, *, api_key: str | None) -> ParsedResponse:
    """A 2xx body -> images (base64 decoded here, URLs left to download) and token usage.

    Per-image errors of a batch are dropped while at least one image came; with none, the
    first error (per-image or top-level) is raised as its gateway error.
    """
    lifted = lift_b64_values(body)
    try:
        wire = _WireResponse.model_validate_json(lifted.skeleton)
    except ValidationError as exc:
        raise UpstreamError(
            "provider answered with something that is not an images response"
        ) from exc
    images: list[ParsedImage] = []
    errors: list[_WireError] = []
    for item in wire.data or ():
        if item.b64_json:
            images.append(ParsedImage(checked_b64(item.b64_json, lifted), None, None))
        elif item.url:
            images.append(ParsedImage(None, item.url, None))
        elif item.error is not None:
            errors.append(item.error)
    if not images:
        error = next(iter(errors), wire.error)
        if error is None:
            raise UpstreamError("provider answered without any image")
        raise _image_error(error.code, error.message or "", api_key=api_key)
    usage = None
    if wire.usage is not None:
        usage = TokenUsage(
            output_tokens=wire.usage.output_tokens, total_tokens=wire.usage.total_tokens
        )
    return ParsedResponse(images, usage)


def is_moderation(code: str | None) -> bool:
    """Ark's content-safety codes: `SensitiveContentDetected[.Violence|...]`,
    `{Input,Output}{Text,Image}SensitiveContentDetected[.PrivacyInformation]`,
    `{Input,Output}{Text,Image}RiskDetection`."""
    if not code:
        return False
    head = code.split(".", 1)[0]
    return head.endswith(("SensitiveContentDetected", "RiskDetection"))


def _image_error(code: str | None, message: str, *, api_key: str | None) -> GatewayError:
    """An error reported inside a 2xx answer (a batch image, or the top-level `error`)."""
    detail = redact(message, [api_key]) or "no message"
    if is_moderation(code):
        return ContentBlocked(detail)
    return UpstreamError(f"provider failed to generate the image ({code or 'no code'}): {detail}")


def map_error(
    status: int, headers: Mapping[str, str], body: bytes, *, host: str, api_key: str | None
) -> GatewayError:
    """A non-2xx upstream answer -> the gateway error the client (and the router) sees."""
    try:
        error = _WireResponse.model_validate_json(body).error
    except ValidationError:
        error = None
    if error is not None and 400 <= status < 500 and is_moderation(error.code):
        return ContentBlocked(redact(error.message or "", [api_key]) or "content refused")
    # 401/403 (never echoed), 429/503 with Retry-After, 408/504, other 4xx, 5xx: as OpenAI.
    return map_openai_error(status, headers, body, host=host, api_key=api_key)


class SeedreamAdapter:
    """Calls BytePlus ModelArk's image generation API through the shared client."""

    def __init__(self, provider: ProviderConfig, context: AdapterContext) -> None:
        self._allow_private = provider.allow_private_network
        n_mode = provider.options.get("n_mode", "fan_out")
        if n_mode not in _N_MODES:
            raise ValueError(f"seedream: options.n_mode must be one of {_N_MODES}, not {n_mode!r}")
        self._n_mode: NMode = n_mode
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
        if request.mask is not None:
            raise InvalidParameter(
                "this model takes no mask: describe the area to change in the prompt",
                param="mask",
            )
        # One deadline for the whole call (request, body, downloads): httpx's own timeout
        # is per read, so a server trickling bytes would otherwise never time out.
        with deadline(self._host, self._timeout_s):
            max_images = batch_size(request, self._n_mode)
            if request.n > 1 and max_images == 1:
                return await self._fan_out_calls(request, upstream_model)
            result = await self._call(request, upstream_model, max_images, request.seed)
        # Batch mode: never more than asked for (the hold covers `n` images).
        return AdapterResult(result.images[: request.n], result.usage)

    async def _fan_out_calls(self, request: ImageRequest, upstream_model: str) -> AdapterResult:
        def one(index: int) -> Callable[[], Awaitable[AdapterResult]]:
            seed = None if request.seed is None else request.seed + index
            return lambda: self._call(request, upstream_model, 1, seed)

        results = successes(await settle([one(i) for i in range(request.n)]))
        return AdapterResult(
            images=[image for result in results for image in result.images],
            usage=sum_usage([r.usage for r in results]),
        )

    async def _call(
        self, request: ImageRequest, upstream_model: str, max_images: int, seed: int | None
    ) -> AdapterResult:
        call = build_call(
            request,
            upstream_model=upstream_model,
            provider=self._provider,
            max_images=max_images,
            seed=seed,
        )
        limit = self._context.max_download_bytes * max_images * 4 // 3 + _JSON_OVERHEAD_BYTES
        with transport_errors(self._host, self._timeout_s):
            async with self._context.http.stream(
                "POST", call.url, headers=call.headers, json=call.json, timeout=self._timeout_s
            ) as response:
                body = await read_limited(response, limit, what=f"answer from {self._host}")
        api_key = self._provider.api_key
        if not response.is_success:
            raise map_error(
                response.status_code, response.headers, body, host=self._host, api_key=api_key
            )
        parsed = parse_response(body, api_key=api_key)
        return AdapterResult(images=await self._materialize(parsed.images), usage=parsed.usage)

    async def _materialize(self, parsed: list[ParsedImage]) -> list[UpstreamImage]:
        """Bytes for every entry, downloading URL entries concurrently; a failed download
        drops its image (the caller bills what came) unless every image failed."""

        def fetch(item: ParsedImage) -> Callable[[], Awaitable[UpstreamImage]]:
            async def run() -> UpstreamImage:
                if item.url is None:
                    return UpstreamImage(b64=item.b64 or b"")
                data = await download(
                    self._context.http,
                    item.url,
                    max_bytes=self._context.max_download_bytes,
                    timeout_s=self._timeout_s,
                    allow_private_network=self._allow_private,
                )
                return UpstreamImage(data)

            return run

        return successes(await settle([fetch(item) for item in parsed]))
