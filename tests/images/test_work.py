"""The image work pool: never more pixels in flight than the budget, FIFO, and the budget is
held until the thread finishes, whatever happens to the caller."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.images.work import ImageWorkPool

pytestmark = pytest.mark.anyio


class Probe:
    """Records how many jobs run at once and their pixel sum, as seen by the threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.pixels = 0
        self.peak_pixels = 0
        self.order: list[int] = []

    def job(self, pixels: int, tag: int, hold_s: float = 0.02) -> int:
        with self.lock:
            self.running += 1
            self.pixels += pixels
            self.peak_pixels = max(self.peak_pixels, self.pixels)
            self.order.append(tag)
        time.sleep(hold_s)
        with self.lock:
            self.running -= 1
            self.pixels -= pixels
        return tag


async def test_pixels_in_flight_never_exceed_the_budget() -> None:
    pool = ImageWorkPool(workers=8, budget_pixels=100)
    probe = Probe()
    sizes = [60, 30, 50, 10, 90, 40, 20, 70] * 3
    results = await asyncio.gather(
        *(pool.run(size, probe.job, size, i) for i, size in enumerate(sizes))
    )
    assert results == list(range(len(sizes)))
    assert probe.peak_pixels <= 100 and pool.peak_pixels <= 100
    assert pool.peak_pixels >= 90  # and the budget is actually used, not serialised
    assert pool.in_flight_pixels == 0
    pool.shutdown()


async def test_a_job_larger_than_the_budget_runs_alone() -> None:
    pool = ImageWorkPool(workers=4, budget_pixels=100)
    probe = Probe()
    await asyncio.gather(
        pool.run(10, probe.job, 10, 0),
        pool.run(1_000, probe.job, 1_000, 1),
        pool.run(10, probe.job, 10, 2),
    )
    assert probe.peak_pixels == 1_000  # alone: nothing else was running beside it
    pool.shutdown()


async def test_waiters_are_served_in_arrival_order() -> None:
    pool = ImageWorkPool(workers=4, budget_pixels=100)
    probe = Probe()
    first = asyncio.ensure_future(pool.run(100, probe.job, 100, 0, 0.1))
    await asyncio.sleep(0.01)
    big = asyncio.ensure_future(pool.run(100, probe.job, 100, 1))
    await asyncio.sleep(0.01)
    smalls = [asyncio.ensure_future(pool.run(1, probe.job, 1, 2 + i)) for i in range(5)]
    await asyncio.gather(first, big, *smalls)
    assert probe.order[:2] == [0, 1]  # the small ones did not overtake the big one
    pool.shutdown()


async def test_the_budget_is_held_until_the_thread_finishes() -> None:
    pool = ImageWorkPool(workers=2, budget_pixels=100)
    started, release = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(10)

    task = asyncio.ensure_future(pool.run(100, blocking))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.in_flight_pixels == 100  # the thread still holds the memory
    release.set()
    for _ in range(200):
        if pool.in_flight_pixels == 0:
            break
        await asyncio.sleep(0.01)
    assert pool.in_flight_pixels == 0
    pool.shutdown()


async def test_work_cancelled_before_it_starts_never_runs() -> None:
    pool = ImageWorkPool(workers=1, budget_pixels=100)
    ran: list[str] = []
    hold = asyncio.ensure_future(pool.run(100, time.sleep, 0.1))
    await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(pool.run(100, ran.append, "queued"))
    await asyncio.sleep(0.01)
    queued.cancel()
    await hold
    await asyncio.sleep(0.05)
    assert ran == [] and pool.in_flight_pixels == 0
    pool.shutdown()
