"""The life of one image request: validate, admit, charge, call, settle, answer.

    parse body ─▶ model lookup ─▶ schema validation ─▶ price quote          (no I/O)
        (edits: + reference images sniffed and pixel-checked, `app.images.edits`)
        ─▶ Idempotency-Key claim ─▶ rate-limit lease ─▶ ledger hold          (admission)
        ─▶ provider routes ─▶ normalise images ─▶ actual cost ─▶ settle      (the work)
        ─▶ response bytes (stored for idempotent replays)

Generations and edits share this one flow (`_handle`); they differ only in how the body is
parsed and fingerprinted for the Idempotency-Key. With `stream: true` everything up to the
hold still happens here, so refusals stay plain JSON errors; the work then runs inside an
`ImageEventStream` (`app.images.streaming`), which calls the same `_run_and_settle`.

Money rules (SPEC 4): the quote is taken from the balance atomically before the provider is
called (`Ledger.hold`, which also re-checks the key and the account in the same statement);
afterwards the hold is settled to the actual cost, and every failure, ours or the provider's,
is settled at zero, i.e. refunded in full. Settlement is shielded from cancellation (a client
hanging up must not leave money held); a process that dies mid-request leaves a `pending`
row that the sweeper refunds after the hold timeout.

Requests refused before the hold (validation, 402/403, 429) are logged `unbilled`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from app.adapters.base import ImageRequest, PartialSink
from app.catalog.loader import Catalog
from app.catalog.parameters import CompiledModel, ValidatedGeneration
from app.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    MissingParameter,
    ModelNotFound,
    PermissionDenied,
)
from app.gateway import Gateway
from app.images.edits import (
    JsonUpload,
    RequestBody,
    check_images,
    edit_body_from_json,
    edit_fingerprint,
)
from app.images.results import Delivery, finish_image, finish_images, render_body
from app.images.routing import call_routes
from app.images.streaming import FinishedSink, ImageEventStream, StreamShape
from app.keys.auth import AuthenticatedKey
from app.ledger.idempotency import request_hash
from app.ratelimit.base import Lease

logger = logging.getLogger(__name__)


Endpoint = Literal["generations", "edits"]
#: the event family of each endpoint's streams (SPEC 1.4)
STREAM_PREFIX: Final[dict[Endpoint, str]] = {
    "generations": "image_generation",
    "edits": "image_edit",
}
JSON: Final = "application/json"
EVENT_STREAM: Final = "text/event-stream"


@dataclass(frozen=True, slots=True)
class CallContext:
    key: AuthenticatedKey
    request_id: str
    client_request_id: str | None
    idempotency_key: str | None
    path: str
    endpoint: Endpoint = "generations"


@dataclass(frozen=True, slots=True)
class Job:
    """A validated, priced request on its way through admission and the provider."""

    ctx: CallContext
    model: CompiledModel
    validated: ValidatedGeneration
    price: int
    started: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """A complete response (also a stored Idempotency-Key replay)."""

    status_code: int
    body: bytes
    media_type: str = JSON


@dataclass(frozen=True, slots=True)
class Claim:
    """An Idempotency-Key this request owns until it completes or abandons it."""

    scope: str
    key: str


#: what a request turns into: a whole response, or events still to come
Result = Outcome | ImageEventStream


def parse_json_object(raw: bytes | bytearray) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg}.") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def resolve_model(catalog: Catalog, body: Mapping[str, Any]) -> CompiledModel:
    model_id = body.get("model")
    if model_id is None or model_id == "":
        raise MissingParameter("You must provide a model parameter.", param="model")
    if not isinstance(model_id, str):
        raise InvalidRequest("'model' must be a string.", code="INVALID_PARAMETER", param="model")
    model = catalog.get(model_id)
    if model is None:
        raise ModelNotFound(
            f"The model '{model_id}' does not exist; GET /v1/models lists the models you can use.",
            param="model",
        )
    return model


def check_model_allowed(key: AuthenticatedKey, model: CompiledModel) -> None:
    # Separate from `resolve_model` so the refusal is logged under the model it names.
    if not key.allows(model.id):
        raise PermissionDenied(
            f"This API key is not allowed to use the model '{model.id}'.",
            code="MODEL_NOT_ALLOWED",
            param="model",
        )


class ImageService:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def generate(self, ctx: CallContext, raw_body: bytes) -> Result:
        """`POST /v1/images/generations`: a JSON body."""
        return await self._handle(
            ctx, lambda: RequestBody(parse_json_object(raw_body)), lambda _: raw_body
        )

    async def edit(self, ctx: CallContext, upload: RequestBody | JsonUpload) -> Result:
        """`POST /v1/images/edits`: a parsed multipart form, or a JSON body."""

        def parse() -> RequestBody:
            if isinstance(upload, RequestBody):
                return upload
            return edit_body_from_json(
                parse_json_object(upload.take()),
                max_image_bytes=self.gateway.settings.max_image_bytes,
            )

        return await self._handle(ctx, parse, edit_fingerprint)

    async def _handle(
        self,
        ctx: CallContext,
        parse: Callable[[], RequestBody],
        fingerprint: Callable[[RequestBody], bytes],
    ) -> Result:
        started = time.perf_counter()
        model_id: str | None = None
        user: str | None = None
        try:
            body = parse()
            model = resolve_model(self.gateway.catalog, body.fields)
            model_id = model.id
            check_model_allowed(ctx.key, model)
            validated = model.validate(
                body.fields, coerce_strings=body.from_form, images=body.images, mask=body.mask
            )
            user = validated.user
            if body.images is not None:
                settings = self.gateway.settings
                check_images(
                    body,
                    max_bytes=settings.max_image_bytes,
                    max_pixels=settings.max_image_pixels,
                )
            price = model.price.quote(validated.request)
        except GatewayError as error:
            await self._log_unbilled(ctx, model_id, user, error, started)
            raise
        job = Job(ctx, model, validated, price, started)
        claim = await self._claim(job, fingerprint(body))
        if isinstance(claim, Outcome):
            return claim
        try:
            lease = await self._admit(job)
        except BaseException:
            await asyncio.shield(self._release_claim(claim, None))
            raise
        if validated.stream:
            return ImageEventStream(
                work=lambda on_partial: self._run_and_settle(job, on_partial),
                shape=_stream_shape(ctx.endpoint, validated.request),
                keepalive_s=self.gateway.settings.stream_keepalive_s,
                close=lambda body: self._finish(lease, claim, body),
            )
        try:
            delivery = await self._run_and_settle(job)
        except BaseException:
            await asyncio.shield(self._finish(lease, claim, None))
            raise
        outcome = Outcome(200, self._render(job, delivery))
        await self._finish(lease, claim, outcome.body)
        return outcome

    async def _claim(self, job: Job, fingerprint: bytes) -> Claim | Outcome | None:
        """Own the Idempotency-Key (a `Claim`), or the stored response to replay, or None."""
        gw, ctx = self.gateway, job.ctx
        if ctx.idempotency_key is None:
            return None
        claim = Claim(scope=f"{ctx.endpoint}:{ctx.key.account_id}", key=ctx.idempotency_key)
        try:
            stored = await gw.idempotency.begin(
                scope=claim.scope,
                key=claim.key,
                request_hash=request_hash("POST", ctx.path, fingerprint),
                ttl_s=gw.settings.idempotency_ttl_s,
                request_id=ctx.request_id,
            )
        except GatewayError as error:  # a bad key (400) or a 409: refused, unbilled
            await self._log_unbilled(ctx, job.model.id, job.validated.user, error, job.started)
            raise
        if stored is None:
            return claim
        # the fingerprint covers `stream`, so a stored stream is replayed to a stream request
        media_type = EVENT_STREAM if job.validated.stream else JSON
        return Outcome(stored.status_code, stored.body, media_type)

    async def _release_claim(self, claim: Claim | None, body: bytes | None) -> None:
        """Store the response under the key, or (no body: the request failed) free the key."""
        if claim is None:
            return
        store = self.gateway.idempotency
        if body is None:
            await store.abandon(scope=claim.scope, key=claim.key)
        else:
            await store.complete(scope=claim.scope, key=claim.key, status_code=200, body=body)

    async def _finish(self, lease: Lease, claim: Claim | None, body: bytes | None) -> None:
        await asyncio.shield(lease.release())
        await self._release_claim(claim, body)

    async def _admit(self, job: Job) -> Lease:
        """The rate-limit lease, then the ledger hold; refusals are logged unbilled."""
        gw = self.gateway
        ctx, model, validated = job.ctx, job.model, job.validated
        key = ctx.key
        try:
            lease = await gw.rate_limiter.acquire(
                key.key_id, rpm=key.rpm, max_concurrency=key.max_concurrency
            )
        except GatewayError as error:
            await self._log_unbilled(ctx, model.id, validated.user, error, job.started)
            raise
        try:
            await gw.ledger.hold(
                request_id=ctx.request_id,
                account_id=key.account_id,
                key_id=key.key_id,
                model=model.id,
                amount_micros=job.price,
                endpoint=ctx.endpoint,
                user=validated.user,
                client_request_id=ctx.client_request_id,
                key_hash=key.key_hash,
            )
        except BaseException as exc:
            await asyncio.shield(lease.release())
            if isinstance(exc, GatewayError):
                await self._log_unbilled(ctx, model.id, validated.user, exc, job.started)
            raise
        return lease

    async def _run_and_settle(self, job: Job, on_partial: FinishedSink | None = None) -> Delivery:
        """Call the provider and settle the hold: the actual cost, or zero on any failure."""
        gw = self.gateway
        ctx, model = job.ctx, job.model
        request: ImageRequest = job.validated.request
        max_pixels = gw.settings.max_image_pixels
        adapter_sink: PartialSink | None = None
        if on_partial is not None and request.partial_images > 0:

            async def adapter_sink(data: bytes) -> None:
                image = await finish_image(
                    data,
                    output_format=request.output_format,
                    max_pixels=max_pixels,
                    work=gw.image_work,
                )
                if image is not None:
                    await on_partial(image)

        try:
            result = await call_routes(
                model_id=model.id,
                routes=model.routes,
                adapters=gw.adapters,
                providers=gw.catalog.providers,
                request=request,
                on_partial=adapter_sink,
            )
            images = await finish_images(
                result,
                output_format=request.output_format,
                max_pixels=max_pixels,
                work=gw.image_work,
            )
            images = images[: request.n]
            cost = model.price.settle(
                request, [(image.width, image.height) for image in images], result.usage
            )
            cost = min(cost, job.price)
        except BaseException as exc:
            error = exc if isinstance(exc, GatewayError) else InternalError("internal error")
            if not isinstance(exc, (GatewayError, asyncio.CancelledError)):
                logger.exception("request %s failed unexpectedly", ctx.request_id)
            await asyncio.shield(
                gw.ledger.settle(
                    request_id=ctx.request_id,
                    cost_micros=0,
                    images=0,
                    status_code=499 if isinstance(exc, asyncio.CancelledError) else error.status,
                    error_code="CLIENT_CLOSED"
                    if isinstance(exc, asyncio.CancelledError)
                    else error.code,
                    latency_ms=_elapsed_ms(job.started),
                )
            )
            if isinstance(exc, GatewayError | asyncio.CancelledError):
                raise
            raise error from exc
        await asyncio.shield(
            gw.ledger.settle(
                request_id=ctx.request_id,
                cost_micros=cost,
                images=len(images),
                status_code=200,
                latency_ms=_elapsed_ms(job.started),
            )
        )
        return Delivery(images, cost, result.usage)

    @staticmethod
    def _render(job: Job, delivery: Delivery) -> bytes:
        return render_body(
            model_id=job.model.id,
            images=delivery.images,
            response_format=job.validated.response_format,
            output_format=job.validated.request.output_format,
            cost_micros=delivery.cost_micros,
            usage=delivery.usage,
        )

    async def _log_unbilled(
        self,
        ctx: CallContext,
        model_id: str | None,
        user: str | None,
        error: GatewayError,
        started: float,
    ) -> None:
        try:
            await self.gateway.ledger.log_unbilled(
                request_id=ctx.request_id,
                account_id=ctx.key.account_id,
                key_id=ctx.key.key_id,
                model=model_id,
                status_code=error.status,
                error_code=error.code,
                latency_ms=_elapsed_ms(started),
                endpoint=ctx.endpoint,
                user=user,
                client_request_id=ctx.client_request_id,
            )
        except Exception:  # the log must never turn a clean 4xx into a 500
            logger.warning("could not log refused request %s", ctx.request_id, exc_info=True)


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _stream_shape(endpoint: Endpoint, request: ImageRequest) -> StreamShape:
    background = request.params.get("background") or request.extra.get("background")
    return StreamShape(
        prefix=STREAM_PREFIX[endpoint],
        quality=request.quality or "auto",
        background=background if isinstance(background, str) else "auto",
        output_format=request.output_format,
    )
