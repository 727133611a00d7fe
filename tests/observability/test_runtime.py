"""The runtime sampler: pool occupancy and waits, and event-loop lag."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from app.observability.runtime import RuntimeSampler
from app.pools import Occupancy
from tests.support.clock import FakeClock


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_pools_are_published_with_their_waits() -> None:
    pool = Occupancy("sampler-test", size=1)
    sampler = RuntimeSampler(lambda: [pool.gauge()])
    waits_before = value("image_gateway_pool_waits_total", pool="sampler-test")
    for _ in range(3):
        pool.enter()
    sampler.sample_pools()
    assert value("image_gateway_pool_size", pool="sampler-test") == 1
    assert value("image_gateway_pool_in_use", pool="sampler-test") == 1
    assert value("image_gateway_pool_waiting", pool="sampler-test") == 2
    assert value("image_gateway_pool_waits_total", pool="sampler-test") - waits_before == 2
    for _ in range(3):
        pool.leave()
    sampler.sample_pools()
    assert value("image_gateway_pool_waiting", pool="sampler-test") == 0
    assert value("image_gateway_pool_in_use", pool="sampler-test") == 0
    assert value("image_gateway_pool_waits_total", pool="sampler-test") - waits_before == 2


def test_seconds_queued_are_published_as_exact_deltas() -> None:
    clock = FakeClock()
    pool = Occupancy("sampler-seconds", size=1, clock=clock)
    sampler = RuntimeSampler(lambda: [pool.gauge()])
    before = value("image_gateway_pool_wait_seconds_total", pool="sampler-seconds")
    sampler.sample_pools()
    pool.enter()
    pool.enter()  # queued
    clock.advance(2.0)
    sampler.sample_pools()  # a wait still in progress is published as far as it has got
    assert value("image_gateway_pool_wait_seconds_total", pool="sampler-seconds") - before == 2.0
    clock.advance(0.25)
    pool.leave()  # the waiter gets the slot after 2.25 s
    clock.advance(10.0)  # time with nobody queued adds nothing
    sampler.sample_pools()
    sampler.sample_pools()
    assert value("image_gateway_pool_wait_seconds_total", pool="sampler-seconds") - before == 2.25
    assert value("image_gateway_pool_waits_total", pool="sampler-seconds") == 1


def test_a_blocked_loop_shows_as_lag() -> None:
    async def scenario() -> float:
        sampler = RuntimeSampler(lambda: [], interval_s=0.02)
        before = value("image_gateway_event_loop_lag_seconds_sum")
        task = asyncio.create_task(sampler.run_forever())
        await asyncio.sleep(0.05)
        time.sleep(0.4)  # noqa: ASYNC251  (blocking the loop on purpose, as a bug would)
        await asyncio.sleep(0.1)
        task.cancel()
        return value("image_gateway_event_loop_lag_seconds_sum") - before

    assert asyncio.run(scenario()) >= 0.2
