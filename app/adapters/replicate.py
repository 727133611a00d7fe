"""The Replicate adapter: one prediction per upstream call, polled until it is done.

    ImageRequest ──build_call──▶ POST {base_url}/v1/models/{owner}/{name}/predictions
                                 (or POST /v1/predictions {"version": id} for `owner/name:id`)
                                 Authorization: Bearer <key>, Prefer: wait=<s>, {"input": {...}}
    prediction   ──parse_prediction──▶ {id, status, output, error, urls{get, cancel}}
      starting | processing ──poll GET urls.get (app.adapters.polling)──▶ ... terminal
      succeeded ──output: URL | [URLs]──download (size-limited, no key)──▶ images
      failed    ──NSFW / "sensitive"──▶ ContentBlocked, else UpstreamError
      canceled | aborted ──▶ UpstreamError
    4xx/5xx      ──map_error (RFC 7807 `detail`)──▶ UpstreamError | UpstreamUnavailable | ...
    deadline / cancellation before a terminal status ──▶ best-effort POST urls.cancel

`build_call`, `parse_prediction`, `prediction_outcome` and `map_error` are pure; the class
only wires them to the shared client. Contract: Replicate's HTTP API reference
(`models.predictions.create`, `predictions.create/get/cancel`), "Create a prediction" (sync
mode, `Prefer: wait=n`, 1-60 s) and the official client replicate/replicate-python
(`prediction.py`: `_create_prediction_headers`, `/v1/predictions/{id}/cancel`;
`exceptions.py`: `ReplicateError`, an RFC 7807 problem body).

Wire decisions:
- `input` is the model's declared params (Replicate models name their sizing inputs
  `aspect_ratio`, `width`/`height`, `resolution` themselves, so they go as they are) plus the
  client's `extra`, then `prompt`, `seed` and the fields below, which the adapter owns. A
  pixel-sized request without an `aspect_ratio` gets `aspect_ratio: "custom"` (BFL models on
  Replicate ignore width/height otherwise; `options.custom_aspect_ratio: null` turns it off).
- `output_format` is sent when the model accepts the requested format (`jpeg` is spelled
  `jpg`; `options.output_formats`, default png/jpg/webp); otherwise the model's default comes
  back and the image service transcodes.
- `n`: with `options.num_outputs_field` (e.g. `num_outputs`) one prediction makes every
  image; without it, n concurrent predictions of one image each (seed + i). A client's own
  `num_outputs` is never forwarded, and at most n outputs are downloaded: the gateway bills n.
- Edits: reference images as `data:` URIs (what the official client sends with its base64
  file encoding) in `options.image_field` (default `image`; a list when
  `options.image_list`), the mask in `options.mask_field` (default `mask`).
- Every knob may be overridden per model: `options.models.<upstream_model>.<knob>`.
- The key is only sent to the API host: a `urls.get`/`urls.cancel` elsewhere is replaced by
  `{base_url}/v1/predictions/{id}[/cancel]`. 402 (no credit) is retryable like a rejected key:
  the next route, on another account or provider, may well succeed.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
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
    UpstreamImage,
)
from app.adapters.concurrency import settle, successes
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
)
from app.images.codec import sniff_format

DEFAULT_BASE_URL: Final = "https://api.replicate.com"
TERMINAL: Final = frozenset({"succeeded", "failed", "canceled", "aborted"})
#: owned by the adapter or the gateway: never taken from params or `extra`
RESERVED_FIELDS: Final = frozenset(
    {"prompt", "seed", "n", "num_outputs", "size", "user", "response_format", "quality"}
    | {"output_format"}
    | {"stream", "partial_images", "image", "image[]", "images", "mask"}
)
# cog-flux/SD safety checkers ("NSFW content detected"), Replicate's E005 ("flagged as
# sensitive"), partner models ("flagged by the safety system", "content policy").
_BLOCKED_MARKERS: Final = (
    "nsfw", "sensitive", "safety system", "safety filter", "content policy", "moderation"
)  # fmt: skip
_MAX_WAIT_S: Final = 60
_CANCEL_TIMEOUT_S: Final = 5.0
_JSON_OVERHEAD_BYTES: Final = 64 * 1024


class ModelOptions(BaseModel):
    """The provider's `options` for one upstream model (per-model overrides applied)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    num_outputs_field: str | None = None
    output_formats: frozenset[str] = frozenset({"png", "jpg", "webp"})
    image_field: str = "image"
    image_list: bool = False
    mask_field: str = "mask"
    custom_aspect_ratio: str | None = "custom"
    #: sync mode (`Prefer: wait=n`); 0 = plain async predictions
    wait_s: int = Field(default=_MAX_WAIT_S, ge=0, le=_MAX_WAIT_S)
    poll_interval_s: float = Field(default=0.5, gt=0)
    max_poll_interval_s: float = Field(default=4.0, gt=0)


def model_options(provider: ProviderConfig, upstream_model: str) -> ModelOptions:
    """Provider-wide options, overridden by `options.models.<upstream_model>`; a
    `ValueError` naming the bad option otherwise (raised at start-up by the adapter)."""
    shared = {key: value for key, value in provider.options.items() if key != "models"}
    per_model = (provider.options.get("models") or {}).get(upstream_model) or {}
    try:
        return ModelOptions.model_validate({**shared, **per_model})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(
            f"replicate options for {upstream_model or 'all models'}: {problems}"
        ) from None


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    url: str
    headers: dict[str, str]
    json: dict[str, Any]


def auth_headers(provider: ProviderConfig) -> dict[str, str]:
    key = {"Authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}
    return {**key, **provider.headers}


def build_call(
    request: ImageRequest,
    *,
    upstream_model: str,
    provider: ProviderConfig,
    options: ModelOptions,
    n: int,
    seed: int | None,
) -> UpstreamCall:
    """The create-prediction request for `n` images (`seed` overrides the request's)."""
    reserved = RESERVED_FIELDS | {options.image_field, options.mask_field}
    if options.num_outputs_field:
        reserved |= {options.num_outputs_field}
    payload: dict[str, Any] = {
        key: value
        for key, value in (*request.extra.items(), *request.params.items())
        if key not in reserved and value is not None
    }
    payload["prompt"] = request.prompt
    if (
        request.sizing == "pixel"
        and {"width", "height"} <= payload.keys()
        and "aspect_ratio" not in payload
        and options.custom_aspect_ratio
    ):
        payload["aspect_ratio"] = options.custom_aspect_ratio
    if options.num_outputs_field:
        payload[options.num_outputs_field] = n
    if seed is not None:
        payload["seed"] = seed
    if request.quality is not None:
        payload["quality"] = request.quality
    wire_format = "jpg" if request.output_format == "jpeg" else request.output_format
    if wire_format in options.output_formats:
        payload["output_format"] = wire_format
    if request.images:
        uris = [data_uri(image) for image in request.images]
        payload[options.image_field] = uris if options.image_list else uris[0]
    if request.mask is not None:
        payload[options.mask_field] = data_uri(request.mask)

    base_url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/")
    headers = auth_headers(provider)
    # Sync mode never holds the request past half the deadline: a prediction id must come
    # back in time to be cancelled when the deadline is reached.
    wait_s = min(options.wait_s, int(provider.timeout_s / 2))
    if wait_s > 0:
        headers = {"Prefer": f"wait={wait_s}", **headers}
    model, _, version = upstream_model.partition(":")
    if version:
        return UpstreamCall(
            f"{base_url}/v1/predictions", headers, {"version": version, "input": payload}
        )
    return UpstreamCall(f"{base_url}/v1/models/{model}/predictions", headers, {"input": payload})


def data_uri(data: bytes) -> str:
    fmt = sniff_format(data) or "png"
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode('ascii')}"


class Prediction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    status: str
    output: Any = None
    error: Any = None
    urls: dict[str, Any] | None = None


def parse_prediction(body: bytes) -> Prediction:
    try:
        return Prediction.model_validate_json(body)
    except ValidationError as exc:
        raise UpstreamError("provider answered with something that is not a prediction") from exc


def output_urls(output: Any) -> list[str]:
    """A model's output as image URLs: one URL, or a list of them (other items ignored)."""
    items = output if isinstance(output, list) else [output]
    return [item for item in items if isinstance(item, str) and item]


def prediction_outcome(
    prediction: Prediction, *, api_key: str | None, early_output: bool = False
) -> list[str] | None:
    """The image URLs of a finished prediction, None while it runs, or the error it ended in.

    `early_output`: sync mode may answer with every file output while the status is still
    `processing`; such an answer is complete for an image model.
    """
    status = prediction.status
    if status == "succeeded" or (early_output and status not in TERMINAL):
        urls = output_urls(prediction.output)
        if urls:
            return urls
        if status == "succeeded":
            raise UpstreamError("provider's prediction succeeded without any image")
        return None
    if status == "failed":
        detail = redact(str(prediction.error or ""), [api_key]) or "no message"
        if any(marker in detail.lower() for marker in _BLOCKED_MARKERS):
            raise ContentBlocked(detail)
        raise UpstreamError(f"provider's prediction failed: {detail}")
    if status in ("canceled", "aborted"):
        raise UpstreamError(f"provider's prediction was {status}")
    return None


def job_url(prediction: Prediction, action: Literal["get", "cancel"], base_url: str) -> str:
    """`urls.get` / `urls.cancel`, unless they point away from the API host (which would be
    sent the key): then the documented `{base_url}/v1/predictions/{id}[/cancel]`."""
    given = (prediction.urls or {}).get(action)
    if isinstance(given, str) and given and host_of(given) == host_of(base_url):
        return given
    suffix = "/cancel" if action == "cancel" else ""
    return f"{base_url}/v1/predictions/{prediction.id}{suffix}"


def map_error(
    status: int, headers: Mapping[str, str], body: bytes, *, host: str, api_key: str | None
) -> GatewayError:
    """A non-2xx API answer -> the gateway error the client (and the router) sees."""
    detail = redact(_problem_detail(body), [api_key]) or "no message"
    if status == 402:
        # Out of credit on this account: another route (account) may still have some.
        return UpstreamError(f"{host} refused the gateway's account (HTTP 402): {detail}")
    return status_error(status, headers, host=host, detail=detail)


def _problem_detail(body: bytes) -> str:
    """`detail` (else `title`) of an RFC 7807 problem body, leniently."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(payload, dict):
        return str(payload.get("detail") or payload.get("title") or "")
    return ""


class ReplicateAdapter:
    """Runs Replicate predictions through the shared client."""

    def __init__(self, provider: ProviderConfig, context: AdapterContext) -> None:
        self._allow_private = provider.allow_private_network
        self._provider = provider
        self._context = context
        self._base_url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._host = host_of(self._base_url)
        self._timeout_s = provider.timeout_s
        # Resolved once, so a bad option stops start-up instead of failing requests.
        self._default_options = model_options(provider, "")
        self._model_options = {
            model: model_options(provider, model) for model in provider.options.get("models") or {}
        }

    async def generate(
        self,
        request: ImageRequest,
        *,
        upstream_model: str,
        on_partial: PartialSink | None = None,
    ) -> AdapterResult:
        # Predictions have no partial images for image models: `on_partial` is never called.
        options = self._model_options.get(upstream_model, self._default_options)
        with deadline(self._host, self._timeout_s):
            if request.n > 1 and not options.num_outputs_field:
                return await self._fan_out(request, upstream_model, options)
            images = await self._predict(
                request, upstream_model, options, n=request.n, seed=request.seed
            )
            return AdapterResult(images=images)

    async def _fan_out(
        self, request: ImageRequest, upstream_model: str, options: ModelOptions
    ) -> AdapterResult:
        def one(index: int) -> Callable[[], Awaitable[list[UpstreamImage]]]:
            seed = None if request.seed is None else request.seed + index
            return lambda: self._predict(request, upstream_model, options, n=1, seed=seed)

        results = successes(await settle([one(i) for i in range(request.n)]))
        return AdapterResult(images=[image for images in results for image in images])

    async def _predict(
        self,
        request: ImageRequest,
        upstream_model: str,
        options: ModelOptions,
        *,
        n: int,
        seed: int | None,
    ) -> list[UpstreamImage]:
        call = build_call(
            request,
            upstream_model=upstream_model,
            provider=self._provider,
            options=options,
            n=n,
            seed=seed,
        )
        limit = self._context.max_download_bytes * n * 4 // 3 + _JSON_OVERHEAD_BYTES
        prediction = await self._send("POST", call.url, limit, headers=call.headers, json=call.json)
        key = self._provider.api_key
        urls = prediction_outcome(prediction, api_key=key, early_output=True)
        if urls is None:
            latest = prediction

            async def check() -> list[str] | None:
                nonlocal latest
                latest = await self._send("GET", job_url(latest, "get", self._base_url), limit)
                return prediction_outcome(latest, api_key=key)

            try:
                urls = await poll(
                    check,
                    interval_s=options.poll_interval_s,
                    max_interval_s=options.max_poll_interval_s,
                )
            except BaseException:
                # Deadline, cancellation or a broken status request: stop the paid job.
                if latest.status not in TERMINAL:
                    await self._cancel(latest)
                raise
        # Never more than was asked (and billed), whatever the model made.
        return await download_results(
            self._context,
            urls[:n],
            timeout_s=self._timeout_s,
            allow_private_network=self._allow_private,
        )

    async def _send(
        self,
        method: str,
        url: str,
        limit: int,
        *,
        headers: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> Prediction:
        with transport_errors(self._host, self._timeout_s):
            async with self._context.http.stream(
                method,
                url,
                headers=headers if headers is not None else auth_headers(self._provider),
                json=json,
                timeout=self._timeout_s,
            ) as response:
                body = await read_limited(response, limit, what=f"answer from {self._host}")
        if not response.is_success:
            raise map_error(
                response.status_code,
                response.headers,
                body,
                host=self._host,
                api_key=self._provider.api_key,
            )
        return parse_prediction(body)

    async def _cancel(self, prediction: Prediction) -> None:
        """Best effort, shielded: runs even while this task is being cancelled."""
        # A failed cancel needs no handling: the job ends on its own.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(_CANCEL_TIMEOUT_S),
            suppress(httpx.HTTPError),
        ):
            async with self._context.http.stream(
                "POST",
                job_url(prediction, "cancel", self._base_url),
                headers=auth_headers(self._provider),
                timeout=_CANCEL_TIMEOUT_S,
            ):
                pass
