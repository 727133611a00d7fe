"""The life of one image request: validate, admit, call, settle, answer.

    parse body ─▶ model lookup (aliases per account) ─▶ schema validation ─▶ price quote
        │                                   (no I/O; the catalog snapshot is read ONCE here)
        ▼
    Admissions.admit: Idempotency-Key claim ─▶ rate-limit lease ─▶ ledger hold
        │         (`app.images.admission`; a replay or a refusal ends the request here)
        ▼
    edits: data URIs base64-decoded, reference images sniffed and pixel-checked
        │  (`check_images`): only now, once the caller has paid, so a $0 or rate-limited
        │  key cannot make the gateway decode or look at them
        ▼
    work task:  async with admission:  provider routes (`Router`: strategy, retries,
                                       breaker; attempts traced into the request log)
                                       ─▶ normalise images ─▶ actual cost
                                       ─▶ response rendered ─▶ settle ─▶ deliver
                the admission's exit: refund an unsettled hold, store or give up the
                Idempotency-Key, release the lease (for every path, plain or streamed)

Generations and edits share this one flow (`_handle`); they differ only in how the body is
parsed and fingerprinted for the Idempotency-Key. With `stream: true` everything up to the
image check still happens before the first byte, so refusals stay plain JSON errors; the work
then feeds an `ImageEventStream` (`app.images.streaming`).

The work of an admitted request runs in a task this service owns, not in the HTTP handler:
a client that hangs up does not stop it, whether it asked for a stream or not. What the
provider produced is charged and stored under the Idempotency-Key, so the client's retry is a
replay, not a second charge; what failed is refunded. Shutdown waits for these tasks
(`wait_idle`); a stream still running after the shutdown grace period is cancelled, refunded,
and ends with an `event: error`.

The response is rendered BEFORE the settle: a rendering failure leaves the hold unsettled,
and the exit refunds it in full. The settle reports what the ledger actually took (nothing,
if the request outlived its hold and was swept); the response then says that amount.

Requests refused before the hold (validation, 402/403, 429) are logged `unbilled`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

import orjson

from app.adapters.base import ImageRequest, PartialSink
from app.catalog.account_pricing import account_price
from app.catalog.live import LiveCatalog
from app.catalog.loader import Catalog
from app.catalog.parameters import CompiledModel
from app.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    MissingParameter,
    ModelNotFound,
    PermissionDenied,
    ServiceUnavailable,
)
from app.images.admission import (
    EVENT_STREAM,
    JSON,
    Admission,
    Admissions,
    CallContext,
    Endpoint,
    Outcome,
    PaidRequest,
    log_unbilled,
)
from app.images.edits import RequestBody, check_images, edit_fingerprint
from app.images.results import (
    Delivery,
    FinishedImage,
    ResponseBody,
    finish_image,
    finish_images,
    render_body,
)
from app.images.routing import Router
from app.images.streaming import ImageEventStream, StreamShape
from app.images.work import ImageWorkPool
from app.json_depth import check_depth
from app.keys.auth import AuthenticatedKey

logger = logging.getLogger(__name__)
T = TypeVar("T")
#: what a render produces: a JSON body's pieces, or a stream's completed events
B = TypeVar("B", bytes, ResponseBody)

__all__ = [
    "EVENT_STREAM",
    "JSON",
    "CallContext",
    "Endpoint",
    "ImageLimits",
    "ImageService",
    "Outcome",
    "Result",
]

#: the event family of each endpoint's streams (SPEC 1.4)
STREAM_PREFIX: Final[dict[Endpoint, str]] = {
    "generations": "image_generation",
    "edits": "image_edit",
}

#: what a request turns into: a whole response, or events still to come
Result = Outcome | ImageEventStream
#: turns a settled delivery into the bytes the client gets (a JSON body, or SSE events)
Render = Callable[[Delivery], B]


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """The settings the image flow reads (from `app.settings.Settings`, at start-up)."""

    max_image_bytes: int
    max_image_pixels: int
    stream_keepalive_s: float
    #: how long an open stream may still run once the server is shutting down
    shutdown_grace_s: float


def parse_json_object(raw: bytes | bytearray) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg}.") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    check_depth(body, raw)
    return body


def resolve_model(
    catalog: Catalog, body: Mapping[str, Any], account_id: str | None = None
) -> CompiledModel:
    """The model a body names (an alias resolves to the target set for `account_id`)."""
    model_id = body.get("model")
    if model_id is None or model_id == "":
        raise MissingParameter("You must provide a model parameter.", param="model")
    if not isinstance(model_id, str):
        raise InvalidRequest("'model' must be a string.", code="INVALID_PARAMETER", param="model")
    model = catalog.get(model_id, account_id)
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
    """Built once at start-up (`app.gateway.open_gateway`) with exactly what it uses."""

    def __init__(
        self,
        *,
        live: LiveCatalog,
        admissions: Admissions,
        router: Router,
        image_work: ImageWorkPool,
        limits: ImageLimits,
    ) -> None:
        self._live = live
        self._admissions = admissions
        self._router = router
        self._image_work = image_work
        self._limits = limits
        #: the work of admitted requests, referenced until done (see the module docstring)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def generate(self, ctx: CallContext, raw_body: bytes) -> Result:
        """`POST /v1/images/generations`: a JSON body."""
        return await self._handle(
            ctx, lambda: RequestBody(parse_json_object(raw_body)), lambda _: raw_body
        )

    async def edit(self, ctx: CallContext, upload: RequestBody) -> Result:
        """`POST /v1/images/edits`: a multipart form, or a JSON body with its data URIs still
        encoded (`app.api.json_edit`; decoded once admitted)."""
        return await self._handle(ctx, lambda: upload, edit_fingerprint)

    async def wait_idle(self) -> None:
        """Wait for the work of admitted requests still running (call at shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._admissions.wait_idle()

    async def _handle(
        self,
        ctx: CallContext,
        parse: Callable[[], RequestBody],
        fingerprint: Callable[[RequestBody], bytes],
    ) -> Result:
        started = time.perf_counter()
        snapshot = self._live.current  # this request's catalog, whatever a reload does next
        model_id: str | None = None
        user: str | None = None
        try:
            body = parse()
            model = resolve_model(snapshot.catalog, body.fields, ctx.key.account_id)
            model_id = model.id
            check_model_allowed(ctx.key, model)
            validated = model.validate(
                body.fields, coerce_strings=body.from_form, images=body.images, mask=body.mask
            )
            user = validated.user
            price = account_price(ctx.key.pricing, model).quote(validated.request)
        except GatewayError as error:
            await log_unbilled(
                self._admissions.ledger,
                ctx,
                model_id=model_id,
                user=user,
                error=error,
                started=started,
            )
            raise
        request = PaidRequest(ctx, snapshot, model, validated, price, started)

        def inspect_uploads(request: PaidRequest) -> PaidRequest:
            uploads = body.decoded()  # a JSON edit's data URIs: base64-decoded only now
            check_images(
                uploads,
                max_bytes=self._limits.max_image_bytes,
                max_pixels=self._limits.max_image_pixels,
            )
            if uploads is body:
                return request
            validated = request.validated
            upstream = replace(
                validated.request, images=tuple(uploads.images or ()), mask=uploads.mask
            )
            return replace(request, validated=replace(validated, request=upstream))

        # pay before you work: an edit's uploads are decoded and looked at only once the
        # caller has paid; the Idempotency-Key fingerprint (image digests) only if there is one
        admitted = await self._admissions.admit(
            request,
            fingerprint(body) if ctx.idempotency_key is not None else b"",
            inspect=inspect_uploads if body.images is not None else None,
        )
        if isinstance(admitted, Outcome):
            return admitted
        if request.stream:
            return ImageEventStream(
                start=lambda stream: self._spawn(self._stream(admitted, stream)),
                shape=_stream_shape(ctx.endpoint, validated.request),
                keepalive_s=self._limits.stream_keepalive_s,
                drain_s=self._limits.shutdown_grace_s,
            )
        # shielded: a client that hangs up (or a cancelled handler) does not stop the work
        return await asyncio.shield(self._spawn(self._respond(admitted)))

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(work, name="image-request")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_consume_outcome)
        return task

    async def _respond(self, admission: Admission) -> Outcome:
        async with admission:
            body = await self._work(admission, lambda delivery: _render(admission, delivery))
        return Outcome(200, body)

    async def _stream(self, admission: Admission, stream: ImageEventStream) -> None:
        on_partial = stream.partial if admission.request.validated.partial_images > 0 else None
        try:
            async with admission:
                events = await self._work(admission, stream.render_completed, on_partial)
        except GatewayError as error:
            stream.fail(error)
        except asyncio.CancelledError:
            # the server is shutting down and the grace period is over: refunded, and said so
            stream.fail(
                ServiceUnavailable(
                    "The gateway is shutting down; retry the request.", retry_after=1
                )
            )
            raise
        except Exception:
            logger.exception("image stream %s failed", admission.request.ctx.request_id)
            stream.fail(InternalError("The gateway hit an internal error."))
        else:
            stream.send(events)
        finally:
            stream.end()

    async def _work(
        self,
        admission: Admission,
        render: Render[B],
        on_partial: Callable[[FinishedImage], Coroutine[Any, Any, None]] | None = None,
    ) -> B:
        """Call the provider, render, settle, deliver: the bytes the client gets."""
        request = admission.request
        ctx, model = request.ctx, request.model
        upstream: ImageRequest = request.validated.request
        max_pixels = self._limits.max_image_pixels
        adapter_sink: PartialSink | None = None
        if on_partial is not None:
            sink = on_partial

            async def adapter_sink(data: bytes) -> None:
                image = await finish_image(
                    data,
                    output_format=upstream.output_format,
                    max_pixels=max_pixels,
                    work=self._image_work,
                )
                if image is not None:
                    await sink(image)

        snapshot = request.snapshot
        try:
            result = await self._router.call(
                model_id=model.id,
                config=model.config,
                adapters=snapshot.adapters,
                providers=snapshot.catalog.providers,
                request=upstream,
                on_partial=adapter_sink,
                trace=admission.trace,
            )
        except GatewayError:
            raise
        except Exception as exc:  # an adapter bug must not reach the client as a traceback
            logger.exception("request %s failed unexpectedly", ctx.request_id)
            raise InternalError("The gateway hit an internal error.") from exc
        images = await finish_images(
            result,
            output_format=upstream.output_format,
            max_pixels=max_pixels,
            work=self._image_work,
        )
        images = images[: upstream.n]
        cost = account_price(ctx.key.pricing, model).actual(
            upstream, [(i.width, i.height) for i in images], result.usage
        )
        if cost > request.price:
            logger.error(
                "request %s: model %s cost %d micro-dollars by the provider's usage, above its "
                "hold of %d; charged the hold",
                ctx.request_id,
                model.id,
                cost,
                request.price,
            )
            cost = request.price
        # a failure in rendering refunds in full
        body = render(Delivery(images, cost, result.usage, result.quality, result.background))
        charged = await admission.settle(cost_micros=cost, images=len(images), body=body)
        if charged != cost:  # swept while it ran: the response says what was really taken
            body = render(
                Delivery(images, charged, result.usage, result.quality, result.background)
            )
            admission.deliver(body)
        return body


def _render(admission: Admission, delivery: Delivery) -> ResponseBody:
    validated = admission.request.validated
    return render_body(
        model_id=admission.request.model.id,
        request=validated.request,
        response_format=validated.response_format,
        delivery=delivery,
    )


def _consume_outcome(task: asyncio.Task[Any]) -> None:
    # The handler that awaited this task may be gone (the client hung up): the failure was
    # already handled by the admission's exit; retrieve it so asyncio does not report it.
    if not task.cancelled():
        task.exception()


def _stream_shape(endpoint: Endpoint, request: ImageRequest) -> StreamShape:
    return StreamShape.of(STREAM_PREFIX[endpoint], request)
