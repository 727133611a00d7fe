"""The Black Forest Labs (FLUX) adapter: one asynchronous job per image.

    ImageRequest ──build_submit──▶ POST {base_url}/v1/{upstream_model}   (x-key, JSON)
                 ◀──────────────── {"id", "polling_url"}
                 ──poll (app.adapters.polling)──▶ GET polling_url        (x-key)
                 ◀──────────────── {"status": "Pending" | "Ready" | "Request Moderated" |
                                    "Content Moderated" | "Error" | "Task not found",
                                    "result": {"sample": "<signed URL>"}}
    Ready        ──download (size-limited, no key: a pre-signed delivery URL)──▶ image bytes
    non-2xx      ──map_error──▶ UpstreamError | UpstreamUnavailable | ContentBlocked | ...

BFL makes one image per job, so `n` becomes `n` concurrent jobs (seed + i, so the images
differ); whatever succeeded is returned. `build_submit`, `parse_submit`, `parse_poll` and
`map_error` are pure and unit-tested without I/O; `BflAdapter` only wires them together.

Wire decisions (contract: the BFL API reference at docs.bfl.ai and BFL's own
black-forest-labs/skills `skills/bfl-api` references and black-forest-labs/flux
`src/flux/api.py`; cited in full in tests/mocks/bfl_upstream.py):
- Sizing. FLUX1.1 [pro] (and the FLUX.1 [pro]/[dev] endpoints) take `width`/`height`, multiples
  of 32 within 256..1440; FLUX.2 takes them as multiples of 16 (64 px minimum, the catalog's
  `max_megapixels` bounds the area). Ultra and Kontext take `aspect_ratio` ("W:H", 21:9..9:21)
  instead. The model's declared fields win; otherwise `request.size` ("WxH") is translated:
  snapped dimensions for pixel endpoints, the reduced ratio for aspect endpoints.
  `options.sizing` (`pixel` / `aspect`), `options.multiple_of`, `options.min_side` and
  `options.max_side` override the per-endpoint defaults.
- `output_format`: BFL makes jpeg or png; webp is asked as png (lossless) and transcoded by
  the image service afterwards.
- Edits: reference images go inline as base64, as `input_image`, `input_image_2`, ... (Kontext
  and FLUX.2); FLUX.1 Fill endpoints (`*fill*`) take `image` + `mask` instead.
- The key is sent to the submit endpoint and to a `polling_url` on the base URL's host or on
  `*.bfl.ai` (regional hosts); any other polling host is replaced by `{base_url}/v1/get_result`.
  The result `sample` is downloaded without it.
- Polling: `options.poll_interval_s` (0.5 s, growing to `poll_max_interval_s`, 4 s). A job is
  paid for once submitted, so up to `options.poll_error_budget` (3) poll failures in a row
  (5xx, 429, transport) are ridden out. One deadline, `timeout_s`, bounds the whole call.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from app.adapters.base import (
    AdapterContext,
    AdapterResult,
    ImageRequest,
    PartialSink,
    UpstreamImage,
)
from app.adapters.concurrency import settle, successes
from app.adapters.polling import poll
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
    InvalidParameter,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.images.codec import encode_b64

DEFAULT_BASE_URL: Final = "https://api.bfl.ai"
#: translated by this adapter, never forwarded as such
SIZING_FIELDS: Final = frozenset(
    {"size", "width", "height", "aspect_ratio", "resolution", "image_size"}
)
#: owned by this adapter; a client's `extra` cannot set them (webhooks would leak results)
RESERVED_FIELDS: Final = frozenset(
    {"prompt", "seed", "output_format", "image", "mask", "webhook_url", "webhook_secret"}
    | {"input_image"}
    | {f"input_image_{i}" for i in range(2, 17)}
)
#: endpoints sized by `aspect_ratio` rather than width/height
_ASPECT_ENDPOINTS: Final = ("flux-pro-1.1-ultra", "flux-kontext")
#: FLUX.1 endpoints with the older 32-pixel grid: (multiple, min side, max side)
_FLUX1_GRID: Final = (32, 256, 1440)
_DEFAULT_GRID: Final = (16, 64, 4096)
_FLUX1_PIXEL_ENDPOINTS: Final = frozenset({"flux-pro-1.1", "flux-pro", "flux-dev"})
_MODERATED: Final = frozenset({"Request Moderated", "Content Moderated"})
_FAILED: Final = frozenset({"Error", "Failed", "Task not found"})
_BODY_LIMIT: Final = 1024 * 1024  # submit and poll answers are small JSON documents


@dataclass(frozen=True, slots=True)
class SubmitCall:
    url: str
    headers: dict[str, str]
    json: dict[str, Any]


def build_submit(
    request: ImageRequest,
    *,
    upstream_model: str,
    provider: ProviderConfig,
    seed: int | None = None,
) -> SubmitCall:
    """The job submission for one image (`seed` overrides the request's: fan-out)."""
    body: dict[str, Any] = {
        key: value
        for key, value in (*request.extra.items(), *request.params.items())
        if key not in SIZING_FIELDS and key not in RESERVED_FIELDS and value is not None
    }
    body.update(sizing_fields(request, upstream_model=upstream_model, options=provider.options))
    body["prompt"] = request.prompt
    seed = request.seed if seed is None else seed
    if seed is not None:
        body["seed"] = seed
    body["output_format"] = "jpeg" if request.output_format == "jpeg" else "png"
    body.update(_edit_fields(request, upstream_model))
    base_url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/")
    return SubmitCall(f"{base_url}/v1/{upstream_model}", _headers(provider), body)


def sizing_fields(
    request: ImageRequest, *, upstream_model: str, options: dict[str, Any]
) -> dict[str, Any]:
    """`width`/`height` on the endpoint's grid, or `aspect_ratio`, or nothing (BFL default)."""
    params = request.params
    aspect = options.get("sizing", "pixel" if _is_pixel(upstream_model) else "aspect") == "aspect"
    if aspect:
        ratio = params.get("aspect_ratio")
        if ratio is not None:
            # `auto` / `match_input_image` are BFL's default (Kontext: the input's ratio).
            return {"aspect_ratio": ratio} if ":" in str(ratio) else {}
        dims = _dims(params, request.size)
        return {} if dims is None else {"aspect_ratio": _ratio(*dims)}
    dims = _dims(params, request.size)
    if dims is None:
        return {}
    multiple, low, high = _grid(upstream_model, options)
    return {
        "width": snap(dims[0], multiple, low, high),
        "height": snap(dims[1], multiple, low, high),
    }


def _is_pixel(upstream_model: str) -> bool:
    return not upstream_model.startswith(_ASPECT_ENDPOINTS)


def _grid(upstream_model: str, options: dict[str, Any]) -> tuple[int, int, int]:
    multiple, low, high = _FLUX1_GRID if upstream_model in _FLUX1_PIXEL_ENDPOINTS else _DEFAULT_GRID
    return (
        int(options.get("multiple_of", multiple)),
        int(options.get("min_side", low)),
        int(options.get("max_side", high)),
    )


def _dims(params: dict[str, Any], size: str | None) -> tuple[int, int] | None:
    width, height = params.get("width"), params.get("height")
    if isinstance(width, int) and isinstance(height, int):
        return width, height
    if size is None:
        return None
    w, sep, h = size.partition("x")
    if sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0:
        return int(w), int(h)
    return None  # a preset such as "auto": let BFL choose


def snap(value: int, multiple: int, low: int, high: int) -> int:
    """Nearest multiple (ties up), kept within [low, high] on the grid."""
    snapped = (value + multiple // 2) // multiple * multiple
    floor = -(-low // multiple) * multiple
    ceiling = high // multiple * multiple
    return max(floor, min(ceiling, snapped))


def _ratio(width: int, height: int) -> str:
    divisor = math.gcd(width, height)
    return f"{width // divisor}:{height // divisor}"


def _edit_fields(request: ImageRequest, upstream_model: str) -> dict[str, str]:
    if "fill" in upstream_model:
        # FLUX.1 Fill: one image and an optional mask (white = repaint).
        fields = {"image": encode_b64(request.images[0])} if request.images else {}
        if request.mask is not None:
            fields["mask"] = encode_b64(request.mask)
        return fields
    if request.mask is not None:
        raise InvalidParameter(f"{upstream_model} does not take a mask", param="mask")
    return {
        ("input_image" if i == 0 else f"input_image_{i + 1}"): encode_b64(data)
        for i, data in enumerate(request.images)
    }


def _headers(provider: ProviderConfig) -> dict[str, str]:
    headers = {"accept": "application/json"}
    if provider.api_key:
        headers["x-key"] = provider.api_key
    return {**headers, **provider.headers}


class _WireSubmit(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    polling_url: str | None = None


class _WireResult(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sample: str | None = None


class _WirePoll(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    status: str
    result: _WireResult | None = None
    details: Any = None
    error: Any = None


def parse_submit(body: bytes, *, base_url: str) -> str:
    """A 2xx submission answer -> the URL to poll (BFL's own, or `get_result` on base_url)."""
    try:
        wire = _WireSubmit.model_validate_json(body)
    except ValidationError as exc:
        raise UpstreamError("BFL answered the submission without a job id") from exc
    root = base_url.rstrip("/")
    if wire.polling_url and _may_see_key(wire.polling_url, root):
        return wire.polling_url
    return str(httpx.URL(f"{root}/v1/get_result", params={"id": wire.id}))


def _may_see_key(url: str, base_url: str) -> bool:
    # Regional deployments answer with polling URLs on e.g. api.us1.bfl.ai; any other host
    # must not receive our key, so we poll the base URL's `get_result` instead.
    if not url.startswith(("https://", "http://")):
        return False
    host = httpx.URL(url).host
    return host == httpx.URL(base_url).host or host == "bfl.ai" or host.endswith(".bfl.ai")


def parse_poll(body: bytes, *, api_key: str | None) -> str | None:
    """A 2xx poll answer -> the sample URL when Ready, None while the job runs; raises on a
    moderated or failed job. Unknown statuses (BFL adds progress states) count as running."""
    try:
        wire = _WirePoll.model_validate_json(body)
    except ValidationError as exc:
        raise UpstreamError("BFL answered the poll with something that is not a job") from exc
    if wire.status == "Ready":
        if wire.result is None or not wire.result.sample:
            raise UpstreamError("BFL reported the job ready without a result")
        return wire.result.sample
    detail = redact(_text(wire.details) or _text(wire.error), [api_key])
    suffix = f": {detail}" if detail else ""
    if wire.status in _MODERATED:
        what = "the prompt or input image" if wire.status == "Request Moderated" else "the image"
        raise ContentBlocked(f"BFL's moderation refused {what}{suffix}")
    if wire.status in _FAILED:
        raise UpstreamError(f"BFL job failed ({wire.status}){suffix}")
    return None


def _text(value: Any) -> str:
    if value is None or value == {} or value == []:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def map_error(
    status: int, headers: Mapping[str, str], body: bytes, *, host: str, api_key: str | None
) -> GatewayError:
    """A non-2xx BFL answer -> the gateway error the client (and the router) sees."""
    detail = redact(_error_message(body), [api_key]) or "no message"
    if status == 402:
        # Out of credits on this BFL account: another route (account) may still have some.
        return UpstreamError(f"{host} refused the job: insufficient credits (HTTP 402)")
    if status not in (401, 403, 408, 429) and 400 <= status < 500 and "moderat" in detail.lower():
        return ContentBlocked(detail)
    return status_error(
        status, headers, host=host, detail=detail, fallback_retry_after=_body_retry_after(body)
    )


def _error_message(body: bytes) -> str:
    """BFL's FastAPI `{"detail": "..." | [{"loc", "msg"}...]}` or `{"error", "message"}`."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")
    if not isinstance(payload, dict):
        return _text(payload)
    detail = payload.get("detail")
    if isinstance(detail, list):
        return "; ".join(_validation_item(item) for item in detail)
    if detail is not None:
        return _text(detail)
    return _text(payload.get("message") or payload.get("error"))


def _validation_item(item: Any) -> str:
    if not isinstance(item, dict):
        return _text(item)
    loc = item.get("loc")
    where = ".".join(str(part) for part in loc if part != "body") if isinstance(loc, list) else ""
    message = str(item.get("msg") or "")
    return f"{where}: {message}" if where else message


def _body_retry_after(body: bytes) -> float | None:
    try:
        value = orjson.loads(body).get("retry_after")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and value >= 0 else None


class BflAdapter:
    """Submits BFL jobs, polls them and downloads the results through the shared client."""

    def __init__(self, provider: ProviderConfig, context: AdapterContext) -> None:
        self._allow_private = provider.allow_private_network
        self._provider = provider
        self._context = context
        self._base_url = provider.base_url or DEFAULT_BASE_URL
        self._host = host_of(self._base_url)
        self._timeout_s = provider.timeout_s
        self._interval_s = float(provider.options.get("poll_interval_s", 0.5))
        self._max_interval_s = float(provider.options.get("poll_max_interval_s", 4.0))
        self._poll_error_budget = int(provider.options.get("poll_error_budget", 3))

    async def generate(
        self,
        request: ImageRequest,
        *,
        upstream_model: str,
        on_partial: PartialSink | None = None,
    ) -> AdapterResult:
        # BFL has no partial images. One deadline for everything (submit, polling,
        # downloads): a job left Pending forever must still end as a 504.
        with deadline(self._host, self._timeout_s):
            outcomes = await settle(
                [self._job(request, upstream_model, i) for i in range(request.n)]
            )
        return AdapterResult(images=successes(outcomes))

    def _job(
        self, request: ImageRequest, upstream_model: str, index: int
    ) -> Callable[[], Awaitable[UpstreamImage]]:
        seed = None if request.seed is None else request.seed + index

        async def run() -> UpstreamImage:
            call = build_submit(
                request, upstream_model=upstream_model, provider=self._provider, seed=seed
            )
            status, headers, body = await self._send("POST", call.url, call.headers, call.json)
            if not 200 <= status < 300:
                raise self._error(status, headers, body)
            polling_url = parse_submit(body, base_url=self._base_url)
            sample = await poll(
                self._checker(polling_url, call.headers),
                interval_s=self._interval_s,
                max_interval_s=self._max_interval_s,
            )
            data = await download(
                self._context.http,
                sample,
                max_bytes=self._context.max_download_bytes,
                timeout_s=self._timeout_s,
                allow_private_network=self._allow_private,
            )
            return UpstreamImage(data)

        return run

    def _checker(
        self, polling_url: str, headers: dict[str, str]
    ) -> Callable[[], Awaitable[str | None]]:
        misses = 0

        async def check() -> str | None:
            # The job is already paid for at BFL: a passing poll failure (5xx, 429, reset,
            # slow answer) is retried on the next round, up to `poll_error_budget` in a row.
            nonlocal misses
            try:
                status, response_headers, body = await self._send("GET", polling_url, headers, None)
            except (UpstreamUnavailable, UpstreamTimeout):
                misses += 1
                if misses > self._poll_error_budget:
                    raise
                return None
            if 200 <= status < 300:
                misses = 0
                return parse_poll(body, api_key=self._provider.api_key)
            misses += 1
            if (status >= 500 or status == 429) and misses <= self._poll_error_budget:
                return None
            raise self._error(status, response_headers, body)

        return check

    async def _send(
        self, method: str, url: str, headers: dict[str, str], json: dict[str, Any] | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        with transport_errors(self._host, self._timeout_s):
            async with self._context.http.stream(
                method, url, headers=headers, json=json, timeout=self._timeout_s
            ) as response:
                body = await read_limited(response, _BODY_LIMIT, what=f"answer from {self._host}")
        return response.status_code, response.headers, body

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        return map_error(status, headers, body, host=self._host, api_key=self._provider.api_key)
