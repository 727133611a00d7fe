"""Polling an asynchronous provider job until it is done (BFL `polling_url`, fal's queue,
Replicate predictions): the one loop every such adapter shares, and the download of the
result URLs a finished job gives (fal, Replicate).

    result = await poll(check, interval_s=0.5, max_interval_s=4.0, what="BFL job")
    images = await download_results(context, urls, timeout_s=..., allow_private_network=...)

`check()` performs one status request and returns the finished value, or `None` while the job
is still running; it raises the adapter's own `GatewayError` when the job failed or was
moderated. The interval grows by half each round up to `max_interval_s`, so a fast job is
picked up quickly and a slow one is not hammered. There is no deadline here on purpose: the
caller (`app.images.routing`) bounds the whole route by the provider's `timeout_s`, and
cancellation stops the loop at its next await.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.adapters.base import AdapterContext, UpstreamImage
from app.adapters.concurrency import settle, successes
from app.adapters.upstream_http import download

T = TypeVar("T")


async def poll(
    check: Callable[[], Awaitable[T | None]],
    *,
    interval_s: float = 0.5,
    max_interval_s: float = 4.0,
) -> T:
    """Call `check` until it returns a value; sleep between calls with gentle back-off."""
    delay = interval_s
    while True:
        result = await check()
        if result is not None:
            return result
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, max_interval_s)


async def download_results(
    context: AdapterContext, urls: list[str], *, timeout_s: float, allow_private_network: bool
) -> list[UpstreamImage]:
    """The bytes of every result URL, concurrently (`upstream_http.download`: size-limited,
    never with the provider's key); a failed download drops its image (the caller bills what
    came) unless every one failed."""

    def fetch(url: str) -> Callable[[], Awaitable[UpstreamImage]]:
        async def run() -> UpstreamImage:
            data = await download(
                context.http,
                url,
                max_bytes=context.max_download_bytes,
                timeout_s=timeout_s,
                allow_private_network=allow_private_network,
            )
            return UpstreamImage(data)

        return run

    return successes(await settle([fetch(url) for url in urls]))
