"""The fal.ai adapter: one queued job per request on fal's Queue API.

    ImageRequest ──build_submit──▶ POST {queue}/{model_id}   (JSON model input, `Key` auth)
                 ◀── {request_id, status_url, response_url, cancel_url} ──parse_submit
    poll: GET status_url ──parse_status──▶ IN_QUEUE | IN_PROGRESS (again) | COMPLETED
          GET response_url ──parse_output──▶ image URLs (NSFW-flagged ones dropped)
          URLs (https or data:) ──download (size-limited, no credentials)──▶ images
    4xx/5xx anywhere ──map_error──▶ ContentBlocked | UpstreamError | UpstreamUnavailable...
    timeout / cancellation while queued ──▶ best-effort PUT cancel_url, then UpstreamTimeout

`build_submit`, `parse_submit`, `parse_status`, `parse_output` and `map_error` are pure;
`FalAdapter` wires them to the shared client.

Wire decisions (contract: fal's Queue API docs, docs.fal.ai/model-apis/model-endpoints/queue;
the official client fal-ai/fal `projects/fal_client/src/fal_client/client.py`; model errors
at fal.ai/docs/errors; model schemas such as fal.ai/models/fal-ai/flux/dev/api):
- Queue root: `base_url` (default https://queue.fal.run); auth `Authorization: Key <key>`;
  provider `headers` sent last. Status and response URLs are followed only on the queue's
  own origin: any other host would receive our key, so they are rebuilt from `request_id`
  the way the official client's `from_request_id` does (`{queue}/{owner}/{alias}/requests/..`).
- fal models take `num_images`, so `n` is one job, not a fan-out; `seed` as is;
  `output_format` is `png` (also for webp, a lossless source for the transcode) or `jpeg`.
- Sizing, by the model's style: pixel/none -> `image_size: {width, height}`; preset -> the
  value as is (a `WxH` preset becomes the object); aspect -> fal's named sizes
  (`1:1` square_hd, `4:3` landscape_4_3, `16:9` landscape_16_9, `3:4` portrait_4_3,
  `9:16` portrait_16_9; other ratios the `WxH` the service derived, `auto` nothing), or
  `aspect_ratio` as is for the endpoints in `options.aspect_ratio_models` (flux-pro ultra,
  imagen...); tier -> `aspect_ratio` + `resolution` as is (fal's tier models take those).
- Other declared params (`enable_safety_checker`, `num_inference_steps`...) and the client's
  `extra` fields are merged in, under the fields this adapter owns.
- Edits: reference images as data URIs in `image_urls` (list), or `image_url` for the
  single-image models; a mask as `mask_url`. `options.edits` maps a generation endpoint to
  its edit endpoint and field: `{"fal-ai/x/text-to-image": {"endpoint": "fal-ai/x/edit",
  "field": "image_urls"}}` (default: the same endpoint, `image_urls`).
- Results: `images[]` (or one `image`) of `{url, width, height, content_type}`; `url` is an
  https link, or a data URI under `sync_mode: true` (a model may declare it, a client may
  send it: results then stay out of fal's request history). `has_nsfw_concepts[i]` true
  drops image i (fal returns a black image there); every image dropped is `ContentBlocked`.
- Errors: `{"detail": str | [{loc, msg, type, ...}]}`; `type: content_policy_violation`
  is `ContentBlocked`. A job reported `FAILED`/`CANCELED`/`ERROR` is an `UpstreamError`.
- Polling: `options.poll_interval_s` (0.5), `options.poll_max_interval_s` (4.0); up to
  `options.poll_error_budget` (3) failed status polls in a row are ridden out. A job given
  up (timeout, cancellation, status polls failing) gets a best-effort PUT cancel_url.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import anyio
import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.adapters.base import (
    AdapterContext,
    AdapterResult,
    ImageRequest,
    PartialSink,
)
from app.adapters.polling import download_results, poll
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
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.images.codec import data_uri, encode_b64, sniff_format

DEFAULT_QUEUE_URL: Final = "https://queue.fal.run"
NAMED_SIZES: Final = {
    "1:1": "square_hd",
    "4:3": "landscape_4_3",
    "16:9": "landscape_16_9",
    "3:4": "portrait_4_3",
    "9:16": "portrait_16_9",
}
SIZING_FIELDS: Final = frozenset(
    {"size", "width", "height", "aspect_ratio", "resolution", "image_size"}
)
#: owned by this adapter; a client's `extra` (or a declared param) cannot override them
RESERVED_FIELDS: Final = frozenset(
    {"prompt", "num_images", "seed", "output_format"}
    | {"image_url", "image_urls", "mask_url", "image", "images", "mask"}
)
_RUNNING: Final = frozenset({"IN_QUEUE", "IN_PROGRESS"})
_WXH: Final = re.compile(r"^(\d+)x(\d+)$")
_SMALL_BODY_BYTES: Final = 1024 * 1024
_JSON_OVERHEAD_BYTES: Final = 64 * 1024


class EditRoute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    endpoint: str | None = None
    field: Literal["image_urls", "image_url"] = "image_urls"


class FalOptions(BaseModel):
    """`ProviderConfig.options` for `adapter: fal`, validated once at construction."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    poll_interval_s: float = Field(default=0.5, gt=0)
    poll_max_interval_s: float = Field(default=4.0, gt=0)
    #: failed status polls in a row ridden out before the job is given up
    poll_error_budget: int = Field(default=3, ge=0)
    #: how long the best-effort cancel of an abandoned job may take (past the timeout)
    cancel_timeout_s: float = Field(default=5.0, gt=0)
    edits: dict[str, EditRoute] = Field(default_factory=dict)
    #: endpoints taking `aspect_ratio` themselves (no `image_size`), e.g. flux-pro ultra
    aspect_ratio_models: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class QueueCall:
    #: the fal endpoint id the job runs on (the edit endpoint for edits)
    endpoint: str
    url: str
    headers: dict[str, str]
    json: dict[str, Any]


@dataclass(frozen=True, slots=True)
class QueueJob:
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str


def queue_url(provider: ProviderConfig) -> str:
    return (provider.base_url or DEFAULT_QUEUE_URL).rstrip("/")


def auth_headers(provider: ProviderConfig) -> dict[str, str]:
    key = {"Authorization": f"Key {provider.api_key}"} if provider.api_key else {}
    return {**key, **provider.headers}


def size_fields(request: ImageRequest, *, native_aspect: bool = False) -> dict[str, Any]:
    """The model's own sizing fields for fal, from the style the service translated into."""
    if request.sizing == "tier" or (request.sizing == "aspect" and native_aspect):
        return {
            key: request.params[key]
            for key in ("aspect_ratio", "resolution")
            if request.params.get(key) is not None
        }
    if request.sizing == "aspect":
        named = NAMED_SIZES.get(str(request.params.get("aspect_ratio")))
        if named is not None:
            return {"image_size": named}
    if request.size is None or request.size == "auto":
        return {}
    match = _WXH.match(request.size)
    if match is None:  # a named preset (`square_hd`, `auto_2K`...): fal's own value
        return {"image_size": request.size} if request.sizing == "preset" else {}
    return {"image_size": {"width": int(match[1]), "height": int(match[2])}}


def build_submit(
    request: ImageRequest,
    *,
    upstream_model: str,
    provider: ProviderConfig,
    options: FalOptions,
) -> QueueCall:
    """The queue submission for one request (`n` images in one job)."""
    body: dict[str, Any] = {
        key: value
        for key, value in (*request.extra.items(), *request.params.items())
        if key not in SIZING_FIELDS and key not in RESERVED_FIELDS and value is not None
    }
    endpoint = upstream_model.strip("/")
    body.update(size_fields(request, native_aspect=endpoint in options.aspect_ratio_models))
    body["prompt"] = request.prompt
    body["num_images"] = request.n
    if request.seed is not None:
        body["seed"] = request.seed
    body["output_format"] = "jpeg" if request.output_format == "jpeg" else "png"
    if request.images:
        route = options.edits.get(endpoint, EditRoute())
        endpoint = (route.endpoint or endpoint).strip("/")
        uris = [_data_uri(image) for image in request.images]
        body[route.field] = uris if route.field == "image_urls" else uris[0]
        if request.mask is not None:
            body["mask_url"] = _data_uri(request.mask)
    url = f"{queue_url(provider)}/{endpoint}"
    return QueueCall(endpoint, url, auth_headers(provider), body)


def _data_uri(image: bytes) -> str:
    return data_uri(sniff_format(image) or "png", encode_b64(image))


class _WireSubmit(BaseModel):
    model_config = ConfigDict(extra="ignore")
    request_id: str = Field(min_length=1)
    status_url: str | None = None
    response_url: str | None = None
    cancel_url: str | None = None


def parse_submit(body: bytes, *, queue: str, endpoint: str) -> QueueJob:
    """The job handle; URLs off the queue's origin are rebuilt (they would get our key)."""
    try:
        wire = _WireSubmit.model_validate_json(body)
    except ValidationError as exc:
        raise UpstreamError("provider answered the submission without a request id") from exc
    owner_alias = "/".join(endpoint.split("/")[:2])
    base = f"{queue}/{owner_alias}/requests/{wire.request_id}"
    origin = httpx.URL(queue)

    def same_origin(url: str | None, fallback: str) -> str:
        if url is None:
            return fallback
        parsed = httpx.URL(url)
        ok = (parsed.scheme, parsed.host, parsed.port) == (origin.scheme, origin.host, origin.port)
        return url if ok else fallback

    return QueueJob(
        wire.request_id,
        status_url=same_origin(wire.status_url, f"{base}/status"),
        response_url=same_origin(wire.response_url, base),
        cancel_url=same_origin(wire.cancel_url, f"{base}/cancel"),
    )


def parse_status(body: bytes, *, api_key: str | None) -> bool:
    """True once the job is COMPLETED, False while queued or running; raises if it failed."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("provider answered a job status that is not JSON") from exc
    status = payload.get("status") if isinstance(payload, dict) else None
    if status == "COMPLETED":
        return True
    if status in _RUNNING:
        return False
    detail = redact(
        _message(payload.get("error") if isinstance(payload, dict) else None), [api_key]
    )
    raise UpstreamError(f"fal job ended with status {status!r}" + (f": {detail}" if detail else ""))


class _WireFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str


class _WireOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    images: list[_WireFile] | None = None
    image: _WireFile | None = None
    has_nsfw_concepts: list[bool | None] | None = None


def parse_output(body: bytes) -> list[str]:
    """The image URLs of a finished job, without the ones fal's checker flagged."""
    try:
        wire = _WireOutput.model_validate_json(body)
    except ValidationError as exc:
        raise UpstreamError("provider answered with something that is not an image result") from exc
    files = wire.images if wire.images is not None else [wire.image] if wire.image else []
    if not files:
        raise UpstreamError("provider answered without any image")
    flags = wire.has_nsfw_concepts or []
    urls = [f.url for i, f in enumerate(files) if not (i < len(flags) and flags[i])]
    if not urls:
        raise ContentBlocked("the provider's safety checker flagged every generated image")
    return urls


def map_error(
    status: int, headers: Mapping[str, str], body: bytes, *, host: str, api_key: str | None
) -> GatewayError:
    """A non-2xx fal answer -> the gateway error the client (and the router) sees."""
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = body[:200].decode("utf-8", "replace")
    detail = payload.get("detail", payload) if isinstance(payload, dict) else payload
    message = redact(_message(detail), [api_key]) or "no message"
    if status not in (401, 403) and _is_moderation(detail):
        return ContentBlocked(message)
    return status_error(status, headers, host=host, detail=message)


def _message(detail: Any) -> str:
    """fal's `detail`: a string, or a list of `{loc, msg, type}` (validation errors)."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict):
        detail = [detail]
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                msg = str(item.get("msg") or item.get("message") or "")
                parts.append(f"{loc}: {msg}" if loc else msg)
            elif isinstance(item, str):
                parts.append(item)
        return "; ".join(p for p in parts if p)
    return ""


def _is_moderation(detail: Any) -> bool:
    items = detail if isinstance(detail, list) else [detail]
    return any(
        isinstance(item, dict) and item.get("type") == "content_policy_violation" for item in items
    )


class FalAdapter:
    """Runs one fal queue job per request through the shared client."""

    def __init__(self, provider: ProviderConfig, context: AdapterContext) -> None:
        self._allow_private = provider.allow_private_network
        self._provider = provider
        self._context = context
        self._options = FalOptions.model_validate(provider.options)
        self._queue = queue_url(provider)
        self._host = host_of(self._queue)
        self._headers = auth_headers(provider)
        self._timeout_s = provider.timeout_s

    async def generate(
        self,
        request: ImageRequest,
        *,
        upstream_model: str,
        on_partial: PartialSink | None = None,
    ) -> AdapterResult:
        # fal's queue has no partial images: a streaming client gets the finished ones.
        with deadline(self._host, self._timeout_s):
            return await self._run(request, upstream_model)

    async def _run(self, request: ImageRequest, upstream_model: str) -> AdapterResult:
        call = build_submit(
            request, upstream_model=upstream_model, provider=self._provider, options=self._options
        )
        body = await self._send("POST", call.url, json=call.json)
        job = parse_submit(body, queue=self._queue, endpoint=call.endpoint)
        try:
            await poll(
                self._checker(job),
                interval_s=self._options.poll_interval_s,
                max_interval_s=self._options.poll_max_interval_s,
            )
        except BaseException:
            # Timed out, abandoned or unreachable: stop paying for it (a no-op on a job
            # that already failed).
            await self._cancel(job)
            raise
        limit = self._context.max_download_bytes * request.n * 4 // 3 + _JSON_OVERHEAD_BYTES
        urls = parse_output(await self._send("GET", job.response_url, limit=limit))
        images = await download_results(
            self._context,
            urls,
            timeout_s=self._timeout_s,
            allow_private_network=self._allow_private,
        )
        return AdapterResult(images=images)

    def _checker(self, job: QueueJob) -> Callable[[], Awaitable[bool | None]]:
        misses = 0

        async def check() -> bool | None:
            # The job is queued (and will be billed) at fal: a passing status failure (5xx,
            # 429, reset, slow answer) is retried next round, `poll_error_budget` in a row.
            nonlocal misses
            try:
                status, headers, body = await self._request("GET", job.status_url)
            except (UpstreamUnavailable, UpstreamTimeout):
                misses += 1
                if misses > self._options.poll_error_budget:
                    raise
                return None
            if 200 <= status < 300:
                misses = 0
                return True if parse_status(body, api_key=self._provider.api_key) else None
            misses += 1
            if (status >= 500 or status == 429) and misses <= self._options.poll_error_budget:
                return None
            raise self._error(status, headers, body)

        return check

    async def _send(
        self, method: str, url: str, *, limit: int = _SMALL_BODY_BYTES, json: Any = None
    ) -> bytes:
        status, headers, body = await self._request(method, url, limit=limit, json=json)
        if not 200 <= status < 300:
            raise self._error(status, headers, body)
        return body

    async def _request(
        self, method: str, url: str, *, limit: int = _SMALL_BODY_BYTES, json: Any = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        with transport_errors(self._host, self._timeout_s):
            async with self._context.http.stream(
                method, url, headers=self._headers, json=json, timeout=self._timeout_s
            ) as response:
                body = await read_limited(response, limit, what=f"answer from {self._host}")
        return response.status_code, response.headers, body

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        return map_error(status, headers, body, host=self._host, api_key=self._provider.api_key)

    async def _cancel(self, job: QueueJob) -> None:
        # Best effort: the job may already be running, finished or gone.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(self._options.cancel_timeout_s),
            contextlib.suppress(GatewayError),
        ):
            await self._send("PUT", job.cancel_url)
