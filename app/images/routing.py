"""Calling a model's routes: the first provider, then its fallbacks on retryable failure.

Each route names a catalog provider (whose adapter was built at start-up) and the upstream
model id. A route's whole call, polling included, is bounded by its provider's `timeout_s`.
A retryable upstream failure (5xx, 429, transport error, timeout) moves on to the next route;
a non-retryable one (content blocked, the provider rejecting the request) ends the attempt at
once, since another provider would most likely refuse it too. When every route failed
retryably, the caller gets 503 `UPSTREAM_UNAVAILABLE` (or the last 504/502 when that is more
telling: a single-route model that timed out says so).
"""

from __future__ import annotations

import asyncio
import logging

from app.adapters.base import AdapterResult, ImageAdapter, ImageRequest, PartialSink
from app.catalog.schema import ProviderConfig, RouteConfig
from app.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable

logger = logging.getLogger(__name__)


async def call_routes(
    *,
    model_id: str,
    routes: list[RouteConfig],
    adapters: dict[str, ImageAdapter],
    providers: dict[str, ProviderConfig],
    request: ImageRequest,
    on_partial: PartialSink | None = None,
) -> AdapterResult:
    last_error: UpstreamError | None = None
    for route in routes:
        provider = providers[route.provider]
        adapter = adapters[route.provider]
        try:
            async with asyncio.timeout(provider.timeout_s):
                result = await adapter.generate(
                    request,
                    upstream_model=route.upstream_model or model_id,
                    on_partial=on_partial,
                )
        except TimeoutError as exc:
            last_error = UpstreamTimeout(
                f"The provider did not answer within {provider.timeout_s:g} s."
            )
            last_error.__cause__ = exc
        except UpstreamError as exc:
            if not exc.retryable:
                raise
            last_error = exc
        except GatewayError:
            raise  # content blocked, bad parameter: no other route will do better
        else:
            if result.images:
                return result
            last_error = UpstreamError("The provider returned no image.")
        logger.warning(
            "model %s: route %s failed (%s); %s",
            model_id,
            route.provider,
            last_error.code,
            "trying the next route" if route is not routes[-1] else "no route left",
        )
    assert last_error is not None
    if len(routes) > 1 and not isinstance(last_error, UpstreamTimeout):
        raise UpstreamUnavailable(
            f"Every provider route of model '{model_id}' failed; last error: {last_error.message}",
            retry_after=5,
        ) from last_error
    raise last_error
