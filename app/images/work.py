"""The one place pixel work runs: a bounded thread pool under a budget of megapixels in flight.

    await work.run(pixels, fn, *args)
        ──wait (FIFO) until `pixels` fit in the budget──▶ reserve
        ──one of `workers` threads runs fn(*args)──────▶ result
        ──the thread finishes──────────────────────────▶ release (wakes the next waiters)

Decoding, transcoding, rendering and resizing are CPU-bound and allocate memory in proportion
to the pixels they touch (3-4 bytes each): a 285 KB PNG can declare 10000x10000 pixels and
cost 300 MB once decoded. Callers state, before the work starts, how many pixels it will hold
decoded at once (`codec.decoded_pixels` for a reference image read at a reduced size); the
pool admits work only while the sum in flight stays within `budget_pixels`, so N concurrent
worst-case requests queue instead of multiplying memory. A single job larger than the whole
budget is admitted alone (it was already allowed by `GATEWAY_MAX_IMAGE_PIXELS`), never
refused here and never deadlocked.

The budget is released when the *thread* finishes, not when the awaiting task does: a client
hanging up cannot free budget while its decode is still holding the memory. Work not yet
started when its caller is cancelled never runs. Waiters are served in arrival order, so a
stream of small jobs cannot starve a large one.

Nothing here touches the event loop's threads: the loop only waits on futures, so a slow
decode never delays other requests (`/healthz` stays fast while a worst-case edit runs).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ImageWorkPool:
    """Bounded threads and a megapixel budget for all image work of one process."""

    def __init__(self, *, workers: int, budget_pixels: int) -> None:
        if workers < 1 or budget_pixels < 1:
            raise ValueError("an image work pool needs workers >= 1 and budget_pixels >= 1")
        self.workers = workers
        self.budget_pixels = budget_pixels
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-work")
        self._in_flight = 0
        #: the most pixels ever reserved at once (a test and metrics figure)
        self.peak_pixels = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def in_flight_pixels(self) -> int:
        return self._in_flight

    async def run(self, pixels: int, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` in a worker thread once `pixels` fit in the budget."""
        cost = max(1, min(pixels, self.budget_pixels))
        await self._reserve(cost)
        loop = asyncio.get_running_loop()
        try:
            job: Future[T] = self._executor.submit(fn, *args)
        except BaseException:
            self._release(cost)
            raise

        def done(_: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed (shutdown)
                loop.call_soon_threadsafe(self._release, cost)

        job.add_done_callback(done)
        try:
            return await asyncio.shield(asyncio.wrap_future(job))
        except asyncio.CancelledError:
            job.cancel()  # only succeeds if the thread has not started it
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _reserve(self, cost: int) -> None:
        if not self._waiters and self._in_flight + cost <= self.budget_pixels:
            self._take(cost)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (cost, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted just as we were cancelled
                self._release(cost)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._grant()
            raise

    def _take(self, cost: int) -> None:
        self._in_flight += cost
        self.peak_pixels = max(self.peak_pixels, self._in_flight)

    def _release(self, cost: int) -> None:
        self._in_flight -= cost
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            cost, waiter = self._waiters[0]
            if waiter.done():  # cancelled while queued
                self._waiters.popleft()
                continue
            if self._in_flight + cost > self.budget_pixels and self._in_flight > 0:
                return
            self._waiters.popleft()
            self._take(cost)
            waiter.set_result(None)


def default_image_work() -> ImageWorkPool:
    """A small pool for code built without the process's one (adapter unit tests, tools)."""
    return ImageWorkPool(workers=2, budget_pixels=100_000_000)
