"""Calling a model's routes as a policy: order them, skip sick providers, retry, fall back.

    RoutePolicy.order(routes)          fallback: as listed; weighted: first route drawn by
        │                              weight, the rest by weight too; cheapest: by `cost`
        ▼
    for each route whose provider's breaker lets it through (`app.images.breaker`):
        attempt (bounded by min(provider timeout_s, time left of the deadline))
        retryable failure → up to `retries` more attempts, sleeping backoff * 2^i with full
                            jitter, only while the deadline allows; then the next route
        non-retryable (content blocked, a rejected request) → raise at once
    every route failed or skipped → 503 UPSTREAM_UNAVAILABLE (or the single route's 504/502)

Each attempt is recorded in a `RouteTrace` ("openai:UPSTREAM_ERROR>fal:ok"), which the
request's admission keeps and the ledger writes into the request log (`request_log.route`) at
the settle. Only the final result is ever billed: failed attempts cost nothing, since the hold
is settled once, on what the successful attempt delivered. One `Router` serves the process
(built in `app.gateway.open_gateway`), so its breaker sees every request's attempts.

Every request's route choice is counted (`image_gateway_route_attempts_total{model,provider,
outcome}`, `image_gateway_route_fallbacks_total{model}`), and every attempt is observed in one
place, `Router._attempt`: its time and outcome per provider
(`image_gateway_upstream_duration_seconds`, `..._upstream_errors_total`), an `upstream
<provider>` span when tracing is on, and the request's provider and upstream time for its
access line (the gateway-added time is the request's time less this).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx

from app.adapters.base import AdapterResult, ImageAdapter, ImageRequest, PartialSink
from app.adapters.upstream_http import hide_addresses, host_of
from app.catalog.schema import ModelConfig, ProviderConfig, RouteConfig
from app.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from app.images.breaker import Breaker, CircuitBreaker
from app.observability import metrics, tracing
from app.observability.facts import note_upstream

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class RouteTrace:
    """What happened to one request's attempts, in order: (provider, outcome code or "ok")."""

    attempts: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return ">".join(f"{provider}:{outcome}" for provider, outcome in self.attempts)

    @property
    def provider(self) -> str | None:
        """The provider that answered (None: none did)."""
        if self.attempts and self.attempts[-1][1] == "ok":
            return self.attempts[-1][0]
        return None


def order_routes(strategy: str, routes: list[RouteConfig], rng: random.Random) -> list[RouteConfig]:
    """The order to try `routes` in, for one request."""
    if strategy == "cheapest":
        return sorted(routes, key=lambda route: route.cost if route.cost is not None else 0)
    if strategy != "weighted":
        return list(routes)
    # weighted sampling without replacement (Efraimidis-Spirakis): key = u^(1/w), highest first
    weighted = [r for r in routes if r.weight > 0]
    keyed = sorted(weighted, key=lambda r: rng.random() ** (1.0 / r.weight), reverse=True)
    return keyed + [r for r in routes if r.weight == 0]


def upstream_deadline_s(config: ModelConfig, providers: Mapping[str, ProviderConfig]) -> float:
    """The longest a request may spend on its model's routes: attempts, retries, fallbacks."""
    return config.deadline_s or sum(providers[route.provider].timeout_s for route in config.routes)


class Router:
    """Process-wide routing state: the breaker, the randomness, the clock and the sleep."""

    def __init__(
        self,
        *,
        breaker: Breaker | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        backoff_s: float = 0.25,
        max_backoff_s: float = 4.0,
    ) -> None:
        self.breaker: Breaker = breaker or CircuitBreaker()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s

    async def call(
        self,
        *,
        model_id: str,
        config: ModelConfig,
        adapters: Mapping[str, ImageAdapter],
        providers: dict[str, ProviderConfig],
        request: ImageRequest,
        on_partial: PartialSink | None = None,
        trace: RouteTrace | None = None,
    ) -> AdapterResult:
        trace = trace if trace is not None else RouteTrace()
        try:
            return await self._call(
                model_id, config, adapters, providers, request, on_partial, trace
            )
        finally:
            metrics.record_routes(model_id, trace.attempts)

    async def _call(
        self,
        model_id: str,
        config: ModelConfig,
        adapters: Mapping[str, ImageAdapter],
        providers: dict[str, ProviderConfig],
        request: ImageRequest,
        on_partial: PartialSink | None,
        trace: RouteTrace,
    ) -> AdapterResult:
        routes = order_routes(config.strategy, config.routes, self._rng)
        deadline_s = upstream_deadline_s(config, providers)
        deadline = self._clock() + deadline_s
        last_error: UpstreamError | None = None
        for route in routes:
            if not await self.breaker.try_acquire(route.provider):
                trace.attempts.append((route.provider, "SKIPPED_COOLDOWN"))
                continue
            for attempt in range(route.retries + 1):
                if attempt:
                    if not await self.breaker.try_acquire(route.provider):
                        break
                    pause = self._rng.uniform(
                        0, min(self._max_backoff_s, self._backoff_s * 2 ** (attempt - 1))
                    )
                    if self._clock() + pause >= deadline:
                        await self.breaker.release_probe(route.provider)
                        break
                    await self._sleep(pause)
                left = deadline - self._clock()
                if left <= 0:
                    await self.breaker.release_probe(route.provider)
                    break
                try:
                    result = await self._attempt(
                        route, adapters, providers, request, on_partial, model_id, left
                    )
                except UpstreamError as exc:
                    trace.attempts.append((route.provider, exc.code))
                    if not exc.retryable:
                        await self.breaker.release_probe(route.provider)
                        raise
                    await self.breaker.record_failure(route.provider)
                    last_error = exc
                    continue
                except BaseException:
                    await self.breaker.release_probe(route.provider)
                    raise
                await self.breaker.record_success(route.provider)
                trace.attempts.append((route.provider, "ok"))
                return result
        logger.warning("model %s: no route answered (%s)", model_id, trace)
        if last_error is None:
            raise UpstreamUnavailable(
                f"Every provider of model '{model_id}' is cooling down after failures; "
                "retry shortly.",
                retry_after=5,
            )
        if len(routes) > 1 and not isinstance(last_error, UpstreamTimeout):
            raise UpstreamUnavailable(
                f"Every provider route of model '{model_id}' failed; last error: "
                f"{last_error.message}",
                retry_after=5,
            ) from last_error
        raise last_error

    @staticmethod
    async def _attempt(
        route: RouteConfig,
        adapters: Mapping[str, ImageAdapter],
        providers: dict[str, ProviderConfig],
        request: ImageRequest,
        on_partial: PartialSink | None,
        model_id: str,
        left_s: float,
    ) -> AdapterResult:
        """One call; every failure comes out as an `UpstreamError` (or a non-upstream error)."""
        provider = route.provider
        timeout_s = min(providers[provider].timeout_s, left_s)
        started = time.perf_counter()
        code: str | None = None
        with tracing.span(
            f"upstream {provider}", {"gateway.provider": provider, "gateway.model": model_id}
        ) as span:
            try:
                try:
                    async with asyncio.timeout(timeout_s):
                        result = await adapters[provider].generate(
                            request,
                            upstream_model=route.upstream_model or model_id,
                            on_partial=on_partial,
                        )
                except TimeoutError as exc:
                    raise UpstreamTimeout(
                        f"The provider did not answer within {timeout_s:g} s."
                    ) from exc
                if not result.images:
                    raise UpstreamError("The provider returned no image.")
            except GatewayError as exc:
                code = exc.code
                tracing.fail(span, code)
                # the adapter's message names the provider's host, for the logs; clients get
                # it without any address (SPEC 2: an internal host or port is not theirs to see)
                logger.info("model %s: %s: %s", model_id, provider, exc.message)
                exc.message = hide_addresses(exc.message, _hosts_of(providers[provider]))
                raise
            except Exception:
                code = "INTERNAL_ERROR"
                raise
            finally:
                elapsed = time.perf_counter() - started
                metrics.record_upstream(provider, elapsed, code)
                note_upstream(provider, elapsed)
                logger.debug(
                    "model %s: %s answered %s in %.0f ms",
                    model_id,
                    provider,
                    code or "ok",
                    elapsed * 1000,
                )
        return result


def _hosts_of(provider: ProviderConfig) -> tuple[str, ...]:
    if not provider.base_url:
        return ()
    url = httpx.URL(provider.base_url)
    return (host_of(provider.base_url), url.host)
