"""The Google Gemini adapter: image models behind `generateContent` ("nano-banana" family).

    ImageRequest ──build_call──▶ POST {base_url}/v1beta/models/{model}:generateContent
        {"contents": [{"role": "user", "parts": [{inlineData} (edits)..., {text}]}],
         "generationConfig": {"responseModalities": ["IMAGE"], "seed"?,
                              "imageConfig": {"aspectRatio"?, "imageSize"?}}}
                 ──send (shared httpx client, one deadline for all calls)──▶
    2xx body     ──parse_response──▶ inlineData bytes | fileData URLs ──download──▶ images
                                     promptFeedback.blockReason / blocking finishReason
                                     ──▶ ContentBlocked;  usageMetadata ──▶ TokenUsage
    4xx/5xx      ──map_error──▶ UpstreamError | UpstreamUnavailable | UpstreamTimeout

`build_call`, `parse_response` and `map_error` are pure; `GeminiAdapter` wires them to the
network. Contract: the Gemini API reference (`models.generateContent`, image generation
guide) as mirrored by the official SDK, googleapis/python-genai `google/genai/types.py`
(`ImageConfig`, `Part`, `FinishReason`, `BlockedReason`, `UsageMetadata`).

Wire decisions:
- Auth is `x-goog-api-key: <key>`; provider `headers` are sent last and win.
- Image models answer one candidate and reject `candidateCount` > 1, so `n` > 1 is `n`
  concurrent calls (seed + i, so the images differ); whatever succeeded is returned.
- Sizing: tier models send `aspectRatio` + `imageSize` (their `aspect_ratio` / `resolution`,
  "auto" omitted so the model picks, e.g. from the reference image); aspect models send
  `aspectRatio`; pixel sizes and `WxH` presets become the nearest supported aspect ratio
  (log scale) and no `imageSize`: not every Gemini image model accepts it.
- Edits: reference images are `inlineData` parts before the prompt text. Gemini has no mask
  input; a mask is not sent.
- Declared non-sizing parameters and the client's unknown fields go into
  `generationConfig` (temperature, ...), except request-level ones (`safetySettings`,
  `systemInstruction`, `tools`, ...) which go next to `contents`.
- Gemini 3 image models "think" with interim images (`thought: true` parts): never returned.
- Usage: input = prompt (+ tool-use) tokens, output = candidate + thinking tokens (Google
  bills thinking as output); `input_tokens_details` from the per-modality prompt counts.
- Google answers a bad key with 400 INVALID_ARGUMENT, reason `API_KEY_INVALID`: treated
  like 401/403 (retryable, another route may hold a good key), its text never passed on.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from app.adapters.base import (
    AdapterContext,
    AdapterResult,
    ImageRequest,
    PartialSink,
    TokenUsage,
    UpstreamImage,
)
from app.adapters.concurrency import settle, successes
from app.adapters.openai import UpstreamCall, sum_usage
from app.adapters.upstream_http import (
    deadline,
    download,
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
    UpstreamError,
)
from app.images.codec import ImageError, decode_b64, encode_b64, sniff_format

DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com"
DEFAULT_API_VERSION: Final = "v1beta"
#: `ImageConfig.aspect_ratio` values documented in the SDK; `options.aspect_ratios` overrides
#: (newer models add extreme ratios such as "1:4")
DEFAULT_ASPECT_RATIOS: Final = (
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
)  # fmt: skip
SIZING_FIELDS: Final = frozenset(
    {"size", "width", "height", "aspect_ratio", "resolution", "image_size"}
)
#: owned by this adapter or the gateway; a client's `extra` cannot set them
RESERVED_FIELDS: Final = frozenset(
    {"model", "prompt", "n", "quality", "seed", "user", "response_format", "output_format"}
    | {"stream", "partial_images", "image", "image[]", "mask", "contents"}
    | {"generationConfig", "generation_config", "candidateCount", "candidate_count"}
    | {"responseModalities", "response_modalities", "imageConfig", "image_config"}
)
#: GenerateContentRequest fields that sit beside `contents`, not in `generationConfig`
REQUEST_FIELDS: Final = frozenset(
    {"safetySettings", "safety_settings", "systemInstruction", "system_instruction"}
    | {"tools", "toolConfig", "tool_config", "cachedContent", "cached_content"}
)
#: candidate finish reasons that mean a safety or policy filter withheld the image
BLOCKING_FINISH_REASONS: Final = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"}
    | {"IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"}
)
_IMAGE_SIZES: Final = {"0.5K": "512"}
# Besides the image, Gemini 3 answers may carry up to two interim "thought" images.
_IMAGES_PER_ANSWER: Final = 3
_JSON_OVERHEAD_BYTES: Final = 64 * 1024


def build_call(
    request: ImageRequest,
    *,
    upstream_model: str,
    provider: ProviderConfig,
    seed: int | None = None,
) -> UpstreamCall:
    """The HTTP request for one image (`seed` overrides the request's: fan-out)."""
    body: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for key, value in (*request.extra.items(), *request.params.items()):
        if key in SIZING_FIELDS or key in RESERVED_FIELDS or value is None:
            continue
        (body if key in REQUEST_FIELDS else config)[key] = value

    parts: list[dict[str, Any]] = [_inline_part(data) for data in request.images]
    parts.append({"text": request.prompt})
    body["contents"] = [{"role": "user", "parts": parts}]
    config["responseModalities"] = list(provider.options.get("response_modalities", ["IMAGE"]))
    image_config = build_image_config(request, provider.options.get("aspect_ratios"))
    if image_config:
        config["imageConfig"] = image_config
    seed = request.seed if seed is None else seed
    if seed is not None:
        config["seed"] = seed % 2**31  # an int32 upstream: wrap, do not fail, big seeds
    body["generationConfig"] = config

    base_url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/")
    version = provider.options.get("api_version", DEFAULT_API_VERSION)
    model = upstream_model.removeprefix("models/")
    headers = {"x-goog-api-key": provider.api_key} if provider.api_key else {}
    return UpstreamCall(
        f"{base_url}/{version}/models/{model}:generateContent",
        {**headers, **provider.headers},
        json=body,
    )


def _inline_part(data: bytes) -> dict[str, Any]:
    mime = f"image/{sniff_format(data) or 'png'}"
    return {"inlineData": {"mimeType": mime, "data": encode_b64(data)}}


def build_image_config(
    request: ImageRequest, aspect_ratios: list[str] | tuple[str, ...] | None = None
) -> dict[str, str]:
    """`imageConfig` from the model's own sizing (tier, aspect) or a translated `WxH`."""
    params = request.params
    config: dict[str, str] = {}
    if request.sizing in ("tier", "aspect"):
        aspect = params.get("aspect_ratio")
        if isinstance(aspect, str) and aspect != "auto":
            config["aspectRatio"] = aspect
        resolution = params.get("resolution")
        if request.sizing == "tier" and isinstance(resolution, str):
            # The catalog spells tiers `<N>K`; Gemini calls its half tier "512".
            config["imageSize"] = _IMAGE_SIZES.get(resolution, resolution)
        return config
    # Pixel models get `size` = their "{width}x{height}"; preset models the preset value,
    # which only helps when it is `WxH` ("auto", "auto_2K": the upstream decides).
    width, sep, height = (request.size or "").partition("x")
    if sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0:
        choices = aspect_ratios or DEFAULT_ASPECT_RATIOS
        config["aspectRatio"] = nearest_aspect_ratio(int(width), int(height), choices)
    return config


def nearest_aspect_ratio(width: int, height: int, choices: list[str] | tuple[str, ...]) -> str:
    """The `W:H` choice closest to width/height on a log scale; ties go to the first."""
    target = math.log(width / height)
    best, best_distance = choices[0], math.inf
    for choice in choices:
        w, _, h = choice.partition(":")
        try:
            distance = abs(math.log(float(w) / float(h)) - target)
        except (ValueError, ZeroDivisionError):
            continue
        if distance < best_distance:
            best, best_distance = choice, distance
    return best


# -- the answer -------------------------------------------------------------------------------
class _Wire(BaseModel):
    # The REST API speaks camelCase (the aliases); proto-JSON dumps and the SDK's
    # `model_dump()` use snake_case (the names): both are read.
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)


class _Blob(_Wire):
    mime_type: str | None = None
    data: str | None = None


class _FileData(_Wire):
    mime_type: str | None = None
    file_uri: str | None = None


class _Part(_Wire):
    text: str | None = None
    thought: bool | None = None
    inline_data: _Blob | None = None
    file_data: _FileData | None = None


class _Content(_Wire):
    parts: list[_Part] | None = None


class _Candidate(_Wire):
    content: _Content | None = None
    finish_reason: str | None = None
    finish_message: str | None = None


class _PromptFeedback(_Wire):
    block_reason: str | None = None
    block_reason_message: str | None = None


class _ModalityCount(_Wire):
    modality: str | None = None
    token_count: int | None = None


class _Usage(_Wire):
    prompt_token_count: int | None = None
    candidates_token_count: int | None = None
    thoughts_token_count: int | None = None
    tool_use_prompt_token_count: int | None = None
    total_token_count: int | None = None
    prompt_tokens_details: list[_ModalityCount] | None = None
    candidates_tokens_details: list[_ModalityCount] | None = None


class _Response(_Wire):
    candidates: list[_Candidate] | None = None
    prompt_feedback: _PromptFeedback | None = None
    usage_metadata: _Usage | None = None


@dataclass(frozen=True, slots=True)
class ParsedImage:
    """One image part: decoded bytes, or a URL still to download."""

    data: bytes | None
    url: str | None


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    images: list[ParsedImage]
    usage: TokenUsage | None


def parse_response(body: bytes, *, api_key: str | None = None) -> ParsedResponse:
    """A 2xx body -> the final images, or ContentBlocked / UpstreamError when there are none."""
    try:
        wire = _Response.model_validate_json(body)
    except ValidationError as exc:
        raise UpstreamError(
            "provider answered with something that is not a Gemini response"
        ) from exc
    feedback = wire.prompt_feedback
    if feedback is not None and feedback.block_reason:
        # Any block reason (SAFETY, OTHER, BLOCKLIST, PROHIBITED_CONTENT, IMAGE_SAFETY...)
        # refuses the prompt itself: retrying it elsewhere would be refused again.
        detail = redact(feedback.block_reason_message or "", [api_key])
        raise ContentBlocked(
            f"the provider blocked the prompt ({feedback.block_reason})"
            + (f": {detail}" if detail else "")
        )
    images: list[ParsedImage] = []
    texts: list[str] = []
    reasons: list[str] = []
    for candidate in wire.candidates or ():
        if candidate.finish_reason:
            reasons.append(candidate.finish_reason)
        parts = (candidate.content.parts if candidate.content else None) or []
        for part in parts:
            if part.thought:
                continue  # an interim "thinking" image or note, not the answer
            if (data := _image_bytes(part.inline_data)) is not None:
                images.append(ParsedImage(data, None))
            elif part.file_data is not None and part.file_data.file_uri:
                images.append(ParsedImage(None, part.file_data.file_uri))
            elif part.text:
                texts.append(part.text)
    if not images:
        raise _no_image(wire, reasons, texts, api_key)
    return ParsedResponse(images, _usage(wire.usage_metadata))


def _image_bytes(blob: _Blob | None) -> bytes | None:
    """The bytes of an image blob; None for an empty one or other media (audio...)."""
    if blob is None or not blob.data:
        return None
    if blob.mime_type is not None and not blob.mime_type.startswith("image/"):
        return None
    try:
        return decode_b64(blob.data)
    except ImageError as exc:
        raise UpstreamError("provider returned invalid base64 image data") from exc


def _no_image(
    wire: _Response, reasons: list[str], texts: list[str], api_key: str | None
) -> GatewayError:
    blocked = [r for r in reasons if r.upper() in BLOCKING_FINISH_REASONS]
    messages = [c.finish_message for c in wire.candidates or () if c.finish_message]
    detail = redact(" ".join(messages or texts), [api_key])
    suffix = f": {detail}" if detail else ""
    if blocked:
        return ContentBlocked(f"the provider withheld the image ({blocked[0]}){suffix}")
    reason = reasons[0] if reasons else "no candidates"
    return UpstreamError(f"provider answered without an image ({reason}){suffix}")


def _usage(usage: _Usage | None) -> TokenUsage | None:
    if usage is None or (usage.prompt_token_count is None and usage.candidates_token_count is None):
        return None
    input_tokens = (usage.prompt_token_count or 0) + (usage.tool_use_prompt_token_count or 0)
    output_tokens = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
    return TokenUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=usage.total_token_count or input_tokens + output_tokens,
        input_tokens_details=_by_modality(usage.prompt_tokens_details),
        output_tokens_details=_by_modality(usage.candidates_tokens_details),
    )


def _by_modality(counts: list[_ModalityCount] | None) -> dict[str, int] | None:
    """Gemini's `[{modality: IMAGE, tokenCount: 258}]` as `{"image_tokens": 258}`."""
    details: dict[str, int] = {}
    for entry in counts or ():
        if entry.modality and entry.token_count is not None:
            key = f"{entry.modality.lower()}_tokens"
            details[key] = details.get(key, 0) + entry.token_count
    return details or None


# -- errors -----------------------------------------------------------------------------------
def map_error(
    status: int, headers: Mapping[str, str], body: bytes, *, host: str, api_key: str | None
) -> GatewayError:
    """A non-2xx answer (`{"error": {"code", "message", "status", "details"}}`) -> our error."""
    message, rpc_status, details = _error_fields(body)
    reasons = {d.get("reason") for d in details}
    if "API_KEY_INVALID" in reasons:
        # Google answers a bad key with 400 INVALID_ARGUMENT: treat it like a 401/403 (and
        # never echo Google's text, which may quote the rejected key).
        return UpstreamError(f"{host} rejected the gateway's credentials (HTTP {status})")
    label = f"HTTP {status} {rpc_status}" if rpc_status else f"HTTP {status}"
    if status in (401, 403):
        label = f"HTTP {status}"
    detail = redact(message, [api_key]) or "no message"
    return status_error(
        status,
        headers,
        host=host,
        detail=detail,
        label=label,
        fallback_retry_after=_retry_delay(details),
    )


def _error_fields(body: bytes) -> tuple[str, str | None, list[dict[str, Any]]]:
    """(message, RPC status, details) of a Google error, leniently (also `[{"error":..}]`)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace"), None, []
    if isinstance(payload, list) and payload:
        payload = payload[0]
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, str):
        return error, None, []
    if not isinstance(error, dict):
        return "", None, []
    rpc_status = error.get("status")
    details = error.get("details")
    return (
        str(error.get("message") or ""),
        rpc_status if isinstance(rpc_status, str) else None,
        [d for d in details if isinstance(d, dict)] if isinstance(details, list) else [],
    )


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    """`google.rpc.RetryInfo.retryDelay` ("37s", "1.5s"), Google's own retry hint."""
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


# -- I/O --------------------------------------------------------------------------------------
class GeminiAdapter:
    """Calls the Gemini API's `generateContent` through the shared client."""

    def __init__(self, provider: ProviderConfig, context: AdapterContext) -> None:
        self._allow_private = provider.allow_private_network
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
        # No partial images: Gemini's interim "thought" images are not previews of the result.
        # One deadline for every call and download: httpx's timeout is per read.
        with deadline(self._host, self._timeout_s):
            return await self._generate(request, upstream_model)

    async def _generate(self, request: ImageRequest, upstream_model: str) -> AdapterResult:
        def one(index: int) -> Callable[[], Awaitable[AdapterResult]]:
            seed = None if request.seed is None else request.seed + index
            return lambda: self._call(request, upstream_model, seed)

        results = successes(await settle([one(i) for i in range(request.n)]))
        images = [image for result in results for image in result.images]
        # A call may answer several images; the caller asked (and holds money) for n.
        return AdapterResult(
            images=images[: request.n], usage=sum_usage([r.usage for r in results])
        )

    async def _call(
        self, request: ImageRequest, upstream_model: str, seed: int | None
    ) -> AdapterResult:
        call = build_call(
            request, upstream_model=upstream_model, provider=self._provider, seed=seed
        )
        limit = self._context.max_download_bytes * _IMAGES_PER_ANSWER * 4 // 3
        with transport_errors(self._host, self._timeout_s):
            async with self._context.http.stream(
                "POST", call.url, headers=call.headers, json=call.json, timeout=self._timeout_s
            ) as response:
                body = await read_limited(
                    response, limit + _JSON_OVERHEAD_BYTES, what=f"answer from {self._host}"
                )
        api_key = self._provider.api_key
        if not response.is_success:
            raise map_error(
                response.status_code, response.headers, body, host=self._host, api_key=api_key
            )
        parsed = parse_response(body, api_key=api_key)
        images = [await self._materialize(item) for item in parsed.images]
        return AdapterResult(images=images, usage=parsed.usage)

    async def _materialize(self, item: ParsedImage) -> UpstreamImage:
        if item.url is None:
            data = item.data or b""
            if len(data) > self._context.max_download_bytes:
                raise UpstreamError(
                    f"image is {len(data)} bytes, over the "
                    f"{self._context.max_download_bytes}-byte limit"
                )
            return UpstreamImage(data)
        # A `fileData` result link: fetched without our key (download never sends it).
        data = await download(
            self._context.http,
            item.url,
            max_bytes=self._context.max_download_bytes,
            timeout_s=self._timeout_s,
            allow_private_network=self._allow_private,
        )
        return UpstreamImage(data)
