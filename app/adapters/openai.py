"""The OpenAI Images API adapter, for OpenAI and any OpenAI-compatible server.

    ImageRequest ──build_call──▶ UpstreamCall (POST {base_url}/images/generations, JSON;
                                               or /images/edits, multipart, for edits)
                 ──send (shared httpx client, one deadline for the whole call)──▶
    2xx body     ──parse_response──▶ b64 bytes | URLs ──download (size-limited)──▶ images
    4xx/5xx      ──map_error──▶ ContentBlocked | UpstreamError | UpstreamUnavailable | ...

`build_call`, `parse_response` and `map_error` are pure, so the wire format is unit-tested
without I/O; `OpenAIAdapter` only wires them to the network.

Wire decisions (contract: the OpenAI API reference for Images, mirrored in the official
`openai` SDK's `types/image_generate_params.py` and `types/images_response.py`):
- GPT Image models (`gpt-image*`, or `options.image_api: gpt-image`) always answer base64
  and reject `response_format`; they take `output_format`. Every other model gets
  `response_format: b64_json` (the API's default there is a URL) and no `output_format`;
  whatever format comes back is transcoded by the image service afterwards.
- `size` is `request.size` ("WxH" or a preset) and sizing fields (`width`, `aspect_ratio`...)
  are never sent; other declared params (`background`, `style`, `moderation`...) and the
  client's undeclared fields (`extra`) are merged in, under the fields this adapter owns.
  `user` is not forwarded (it identifies the gateway's caller, not the operator's).
- Auth: `Authorization: Bearer <api_key>`. With `api_version` set (Azure OpenAI, base_url
  `https://<resource>.openai.azure.com/openai/deployments/<deployment>`) the key goes in
  Azure's `api-key` header and `?api-version=` is added; Azure reads a Bearer token as an
  Entra ID token, so the key is not also sent that way. `options.auth` (`bearer`,
  `api-key`, `none`) overrides; provider `headers` are sent last and win.
- `options.fan_out: true` for servers that allow only n=1: n concurrent calls of one image
  each (seed + i, so the images differ); whatever succeeded is returned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from app.adapters.b64_fields import Lifted, lift_b64_values
from app.adapters.base import (
    AdapterContext,
    AdapterResult,
    ImageRequest,
    PartialSink,
    TokenUsage,
    UpstreamImage,
)
from app.adapters.concurrency import settle, successes
from app.adapters.upstream_http import (
    deadline,
    download,
    host_of,
    read_buffer,
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
from app.images.codec import ImageError, check_b64, decode_b64, sniff_format

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
#: never sent as such: the adapter translates them into `size`
SIZING_FIELDS: Final = frozenset(
    {"size", "width", "height", "aspect_ratio", "resolution", "image_size"}
)
#: owned by this adapter (or by the gateway); a client's `extra` cannot override them
RESERVED_FIELDS: Final = frozenset(
    {"model", "prompt", "n", "quality", "seed", "user", "response_format", "output_format"}
    | {"stream", "partial_images", "image", "image[]", "mask"}
)
_MODERATION_CODES: Final = frozenset(
    {"moderation_blocked", "content_policy_violation", "content_filter"}
)
_JSON_HEADERS: Final = {"Content-Type": "application/json"}
# A base64 body is 4/3 of the image bytes; the slack covers the JSON around it.
_JSON_OVERHEAD_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One HTTP request, fully built: JSON (`json`) or multipart (`data` + `files`)."""

    url: str
    headers: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None


@dataclass(frozen=True, slots=True)
class ParsedImage:
    """One `data[]` entry: checked base64 (decoded only on demand), or a URL to download."""

    b64: bytes | memoryview | None
    url: str | None
    revised_prompt: str | None

    @property
    def data(self) -> bytes | None:
        return None if self.b64 is None else decode_b64(self.b64)


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    images: list[ParsedImage]
    usage: TokenUsage | None
    #: what the provider says it used (GPT Image answers resolve `auto`)
    quality: str | None = None
    background: str | None = None


def is_gpt_image(upstream_model: str, provider: ProviderConfig) -> bool:
    explicit = provider.options.get("image_api")
    if explicit is not None:
        return bool(explicit == "gpt-image")
    return "gpt-image" in upstream_model.lower()


def build_call(
    request: ImageRequest,
    *,
    upstream_model: str,
    provider: ProviderConfig,
    n: int | None = None,
    seed: int | None = None,
) -> UpstreamCall:
    """The HTTP request for one upstream call (`n`/`seed` override the request's: fan-out)."""
    body: dict[str, Any] = {
        key: value
        for key, value in (*request.extra.items(), *request.params.items())
        if key not in SIZING_FIELDS and key not in RESERVED_FIELDS and value is not None
    }
    body["model"] = upstream_model
    body["prompt"] = request.prompt
    body["n"] = request.n if n is None else n
    if request.size is not None:
        body["size"] = request.size
    if request.quality is not None:
        body["quality"] = request.quality
    seed = request.seed if seed is None else seed
    if seed is not None:
        body["seed"] = seed
    if is_gpt_image(upstream_model, provider):
        body["output_format"] = request.output_format
    else:
        body["response_format"] = "b64_json"

    base_url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/")
    params = {"api-version": provider.api_version} if provider.api_version else {}
    headers = {**_auth_headers(provider), **provider.headers}
    if not request.images:
        return UpstreamCall(f"{base_url}/images/generations", headers, params, json=body)
    return UpstreamCall(
        f"{base_url}/images/edits",
        headers,
        params,
        data={key: _form_value(value) for key, value in body.items()},
        files=_edit_files(request),
    )


def _auth_headers(provider: ProviderConfig) -> dict[str, str]:
    key = provider.api_key
    style = provider.options.get("auth") or ("api-key" if provider.api_version else "bearer")
    if not key or style == "none":
        return {}
    if style == "api-key":
        return {"api-key": key}
    return {"Authorization": f"Bearer {key}"}


def _form_value(value: Any) -> str:
    # Multipart fields are strings: JSON spelling for booleans and structures, as the SDKs do.
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _edit_files(request: ImageRequest) -> list[tuple[str, tuple[str, bytes, str]]]:
    # One image is sent as `image`, several as repeated `image[]` (the SDKs' own spelling).
    name = "image" if len(request.images) == 1 else "image[]"
    files = [_file(name, f"image_{i}", data) for i, data in enumerate(request.images)]
    if request.mask is not None:
        files.append(_file("mask", "mask", request.mask))
    return files


def _file(part: str, stem: str, data: bytes) -> tuple[str, tuple[str, bytes, str]]:
    fmt = sniff_format(data) or "png"
    return part, (f"{stem}.{fmt}", data, f"image/{fmt}")


class _WireImage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class _WireUsage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: dict[str, int] | None = None
    output_tokens_details: dict[str, int] | None = None


class _WireResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: list[_WireImage] | None = None
    usage: _WireUsage | None = None
    quality: str | None = None
    background: str | None = None


def parse_response(body: bytes | bytearray) -> ParsedResponse:
    """A 2xx body -> images (checked base64, or URLs left to download) and token usage.

    The base64 is lifted out before the parse (`app.adapters.b64_fields`): a 1024 px answer
    is parsed as a few hundred bytes, and its image stays a view into `body`.
    """
    lifted = lift_b64_values(body)
    try:
        wire = _WireResponse.model_validate_json(lifted.skeleton)
    except ValidationError as exc:
        raise UpstreamError(
            "provider answered with something that is not an images response"
        ) from exc
    images: list[ParsedImage] = []
    for item in wire.data or ():
        if item.b64_json:
            images.append(
                ParsedImage(checked_b64(item.b64_json, lifted), None, item.revised_prompt)
            )
        elif item.url:
            images.append(ParsedImage(None, item.url, item.revised_prompt))
    if not images:
        raise UpstreamError("provider answered without any image")
    usage = None
    if wire.usage is not None:
        usage = TokenUsage(**wire.usage.model_dump())
    return ParsedResponse(images, usage, quality=wire.quality, background=wire.background)


def checked_b64(text: str, lifted: Lifted) -> bytes | memoryview:
    """A parsed `b64_json` string as strict base64 bytes: the lifted view it stands for
    (checked when lifted), or its own text, checked here; `UpstreamError` if invalid."""
    view = lifted.value(text)
    if view is not None:
        return view
    try:
        b64 = text.encode("ascii")
        check_b64(b64)  # strict, like a decode, but the bytes may pass through as is
    except (ImageError, UnicodeEncodeError) as exc:
        raise UpstreamError("provider returned invalid base64 image data") from exc
    return b64


def map_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes | bytearray,
    *,
    host: str,
    api_key: str | None,
) -> GatewayError:
    """A non-2xx upstream answer -> the gateway error the client (and the router) sees."""
    message, err_type, code = _error_fields(body)
    detail = redact(message, [api_key]) or "no message"
    if status == 400 and _is_moderation(message, err_type, code):
        return ContentBlocked(detail)
    return status_error(status, headers, host=host, detail=detail)


def _error_fields(body: bytes | bytearray) -> tuple[str, str | None, str | None]:
    """(message, type, code) of an OpenAI-shaped error `{"error": {...}}`, leniently."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace"), None, None
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        return "", None, None
    code = error.get("code")
    err_type = error.get("type")
    return (
        str(error.get("message") or ""),
        err_type if isinstance(err_type, str) else None,
        code if isinstance(code, str) else None,
    )


def _is_moderation(message: str, err_type: str | None, code: str | None) -> bool:
    if code in _MODERATION_CODES:
        return True
    return err_type == "image_generation_user_error" and "safety" in message.lower()


class OpenAIAdapter:
    """Calls an OpenAI-compatible Images API through the shared client."""

    def __init__(self, provider: ProviderConfig, context: AdapterContext) -> None:
        self._allow_private = provider.allow_private_network
        self._provider = provider
        self._context = context
        self._host = host_of(provider.base_url or DEFAULT_BASE_URL)
        self._timeout_s = provider.timeout_s
        self._fan_out = bool(provider.options.get("fan_out", False))

    async def generate(
        self,
        request: ImageRequest,
        *,
        upstream_model: str,
        on_partial: PartialSink | None = None,
    ) -> AdapterResult:
        # Partial images would need the upstream's own SSE stream; this adapter makes one
        # plain call, so a streaming client gets the completed images only.
        #
        # One deadline for the whole call (request, body, downloads): httpx's own timeout
        # is per read, so a server trickling bytes would otherwise never time out.
        with deadline(self._host, self._timeout_s):
            if self._fan_out and request.n > 1:
                return await self._fan_out_calls(request, upstream_model)
            return await self._call(request, upstream_model, n=request.n, seed=request.seed)

    async def _fan_out_calls(self, request: ImageRequest, upstream_model: str) -> AdapterResult:
        def one(index: int) -> Callable[[], Awaitable[AdapterResult]]:
            seed = None if request.seed is None else request.seed + index
            return lambda: self._call(request, upstream_model, n=1, seed=seed)

        results = successes(await settle([one(i) for i in range(request.n)]))
        return AdapterResult(
            images=[image for result in results for image in result.images],
            usage=sum_usage([r.usage for r in results]),
            quality=next((r.quality for r in results if r.quality), None),
            background=next((r.background for r in results if r.background), None),
        )

    async def _call(
        self, request: ImageRequest, upstream_model: str, *, n: int, seed: int | None
    ) -> AdapterResult:
        call = build_call(
            request, upstream_model=upstream_model, provider=self._provider, n=n, seed=seed
        )
        body_limit = self._context.max_download_bytes * n * 4 // 3 + _JSON_OVERHEAD_BYTES
        http = self._context.http
        with transport_errors(self._host, self._timeout_s):
            # orjson, not httpx's stdlib `json=` (3x slower, and a second copy of the body)
            content = None if call.json is None else orjson.dumps(call.json)
            headers = call.headers if content is None else {**_JSON_HEADERS, **call.headers}
            async with http.stream(
                "POST",
                call.url,
                params=call.params,
                headers=headers,
                content=content,
                data=call.data,
                files=call.files,
                timeout=self._timeout_s,
            ) as response:
                # one buffer, which the images' base64 (and the response) will be views into
                body = await read_buffer(response, body_limit, what=f"answer from {self._host}")
        if not response.is_success:
            raise map_error(
                response.status_code,
                response.headers,
                body,
                host=self._host,
                api_key=self._provider.api_key,
            )
        parsed = parse_response(body)
        return AdapterResult(
            images=await self._materialize(parsed.images),
            usage=parsed.usage,
            quality=parsed.quality,
            background=parsed.background,
        )

    async def _materialize(self, parsed: list[ParsedImage]) -> list[UpstreamImage]:
        """Bytes for every entry, downloading URL entries concurrently; a failed download
        drops its image (the caller bills what came) unless every image failed."""

        def fetch(item: ParsedImage) -> Callable[[], Awaitable[UpstreamImage]]:
            async def run() -> UpstreamImage:
                if item.url is None:
                    return UpstreamImage(b64=item.b64 or b"", revised_prompt=item.revised_prompt)
                data = await download(
                    self._context.http,
                    item.url,
                    max_bytes=self._context.max_download_bytes,
                    timeout_s=self._timeout_s,
                    allow_private_network=self._allow_private,
                )
                return UpstreamImage(data, item.revised_prompt)

            return run

        return successes(await settle([fetch(item) for item in parsed]))


def sum_usage(usages: list[TokenUsage | None]) -> TokenUsage | None:
    """Token usage of several calls added up (None when no call reported any)."""
    present = [u for u in usages if u is not None]
    if not present:
        return None
    return TokenUsage(
        input_tokens=sum(u.input_tokens for u in present),
        output_tokens=sum(u.output_tokens for u in present),
        total_tokens=sum(u.total_tokens for u in present),
        input_tokens_details=_sum_details([u.input_tokens_details for u in present]),
        output_tokens_details=_sum_details([u.output_tokens_details for u in present]),
    )


def _sum_details(details: list[dict[str, int] | None]) -> dict[str, int] | None:
    total: dict[str, int] = {}
    for one in details:
        for key, value in (one or {}).items():
            total[key] = total.get(key, 0) + value
    return total or None
