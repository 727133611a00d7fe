"""The life of one image request: validate, admit, charge, call, settle, answer.

    parse body ─▶ model lookup ─▶ schema validation ─▶ price quote          (no I/O)
        ─▶ Idempotency-Key claim ─▶ rate-limit lease ─▶ ledger hold          (admission)
        ─▶ provider routes ─▶ normalise images ─▶ actual cost ─▶ settle      (the work)
        ─▶ response bytes (stored for idempotent replays)

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
from dataclasses import dataclass
from typing import Any

import orjson

from app.adapters.base import ImageRequest
from app.catalog.loader import Catalog
from app.catalog.parameters import CompiledModel, ValidatedGeneration
from app.errors import (
    GatewayError,
    InternalError,
    InvalidParameter,
    InvalidRequest,
    MissingParameter,
    ModelNotFound,
    PermissionDenied,
)
from app.gateway import Gateway
from app.images.results import finish_images, render_body
from app.images.routing import call_routes
from app.keys.auth import AuthenticatedKey
from app.ledger.idempotency import request_hash

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallContext:
    key: AuthenticatedKey
    request_id: str
    client_request_id: str | None
    idempotency_key: str | None
    path: str
    endpoint: str = "generations"


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
    status_code: int
    body: bytes


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg}.") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def resolve_model(catalog: Catalog, body: dict[str, Any]) -> CompiledModel:
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

    async def generate(self, ctx: CallContext, raw_body: bytes) -> Outcome:
        started = time.perf_counter()
        model_id: str | None = None
        user: str | None = None
        try:
            body = parse_json_object(raw_body)
            model = resolve_model(self.gateway.catalog, body)
            model_id = model.id
            check_model_allowed(ctx.key, model)
            validated = model.validate(body)
            user = validated.user
            if validated.stream:
                # SSE (SPEC 1.4) is not built yet; a JSON answer would break the SDK's parser
                raise InvalidParameter(
                    "Streaming (stream: true) is not available on this gateway yet; "
                    "omit it to receive the images in one JSON response.",
                    param="stream",
                )
            price = model.price.quote(validated.request)
        except GatewayError as error:
            await self._log_unbilled(ctx, model_id, user, error, started)
            raise
        return await self._admit_and_run(Job(ctx, model, validated, price, started), raw_body)

    async def _admit_and_run(self, job: Job, raw_body: bytes) -> Outcome:
        gw = self.gateway
        ctx = job.ctx
        scope = f"{ctx.endpoint}:{ctx.key.account_id}"
        if ctx.idempotency_key is not None:
            try:
                stored = await gw.idempotency.begin(
                    scope=scope,
                    key=ctx.idempotency_key,
                    request_hash=request_hash("POST", ctx.path, raw_body),
                    ttl_s=gw.settings.idempotency_ttl_s,
                )
            except GatewayError as error:  # a bad key (400) or a 409: refused, unbilled
                await self._log_unbilled(ctx, job.model.id, job.validated.user, error, job.started)
                raise
            if stored is not None:
                return Outcome(stored.status_code, stored.body)
        try:
            outcome = await self._charge_and_run(job)
        except BaseException:
            if ctx.idempotency_key is not None:
                await asyncio.shield(gw.idempotency.abandon(scope=scope, key=ctx.idempotency_key))
            raise
        if ctx.idempotency_key is not None:
            await gw.idempotency.complete(
                scope=scope,
                key=ctx.idempotency_key,
                status_code=outcome.status_code,
                body=outcome.body,
            )
        return outcome

    async def _charge_and_run(self, job: Job) -> Outcome:
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
                )
            except GatewayError as error:
                await self._log_unbilled(ctx, model.id, validated.user, error, job.started)
                raise
            return await self._run_and_settle(job)
        finally:
            await asyncio.shield(lease.release())

    async def _run_and_settle(self, job: Job) -> Outcome:
        gw = self.gateway
        ctx, model, validated = job.ctx, job.model, job.validated
        request: ImageRequest = validated.request
        try:
            result = await call_routes(
                model_id=model.id,
                routes=model.routes,
                adapters=gw.adapters,
                providers=gw.catalog.providers,
                request=request,
            )
            images = await finish_images(
                result,
                output_format=request.output_format,
                max_pixels=gw.settings.max_image_pixels,
            )
            images = images[: request.n]
            cost = model.price.settle(
                request, [(image.width, image.height) for image in images], result.usage
            )
            cost = min(cost, job.price)
            body = render_body(
                model_id=model.id,
                images=images,
                response_format=validated.response_format,
                output_format=request.output_format,
                cost_micros=cost,
                usage=result.usage,
            )
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
        return Outcome(200, body)

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
