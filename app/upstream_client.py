"""The one pooled HTTP client every adapter shares, built once at start-up.

Adapters speak `httpx` (its request/response API, its exceptions). Underneath, the default
transport is aiohttp's (`httpx-aiohttp`, the transport the official openai SDK offers for
speed): measured against the mock upstream at 16 concurrent calls it costs 0.73 ms of CPU per
call instead of 1.74 ms with httpcore's default pool, whose per-request scan of idle
connections goes through anyio's typed-attribute machinery. `GATEWAY_UPSTREAM_TRANSPORT=httpx`
switches back to httpcore should an upstream need it. Both honour HTTP(S)_PROXY from the
environment and never follow redirects (a redirect from a provider is answered, not chased).
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from app.settings import Settings

KEEPALIVE_S = 60.0


class _Transport(AiohttpTransport):
    """httpx-aiohttp 0.2 maps a refused connection (aiohttp's `ClientConnectorError`, a
    subclass of `ClientConnectionError`) to `httpx.ConnectTimeout`, which would turn "the
    provider is down" (503) into "the provider is slow" (504). Put the distinction back."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
                cause, aiohttp.ServerTimeoutError | TimeoutError
            ):
                raise httpx.ConnectError(str(exc), request=request) from cause
            raise


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    size = settings.upstream_max_connections
    limits = httpx.Limits(
        max_connections=size, max_keepalive_connections=size, keepalive_expiry=KEEPALIVE_S
    )
    # per-provider timeouts are applied per call by the adapters and routing
    timeout = httpx.Timeout(120.0)
    if settings.upstream_transport == "httpx":
        return httpx.AsyncClient(limits=limits, timeout=timeout, follow_redirects=False)

    def session() -> aiohttp.ClientSession:  # created lazily, inside the running event loop
        connector = aiohttp.TCPConnector(
            limit=size, keepalive_timeout=KEEPALIVE_S, ttl_dns_cache=300
        )
        return aiohttp.ClientSession(connector=connector, trust_env=True)

    return httpx.AsyncClient(
        transport=_Transport(limits=limits, client=session),
        timeout=timeout,
        follow_redirects=False,
    )
