"""Pool occupancy: the queueing signal (waiting, waits, seconds queued) and its warning."""

from __future__ import annotations

import logging

import pytest

from app.pools import Occupancy, Waits
from tests.support.clock import FakeClock


def test_waiting_counts_callers_beyond_the_pool_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = Occupancy("upstream", size=2)
    with caplog.at_level(logging.WARNING, logger="app.pools"):
        for _ in range(5):
            pool.enter()
    gauge = pool.gauge()
    assert (gauge.size, gauge.in_use(), gauge.waiting(), gauge.waits()) == (2, 2, 3, 3)
    assert len([r for r in caplog.records if "upstream pool exhausted" in r.message]) == 1
    for _ in range(4):
        pool.leave()
    assert (gauge.in_use(), gauge.waiting(), gauge.waits()) == (1, 0, 3)


def test_seconds_queued_are_the_queue_length_integrated_over_time() -> None:
    clock = FakeClock()
    pool = Occupancy("upstream", size=1, clock=clock)
    pool.enter()  # takes the one slot: no wait, no time counted
    clock.advance(7.0)
    assert pool.gauge().wait_seconds() == 0.0
    pool.enter()  # queued from t=107
    clock.advance(2.0)
    pool.enter()  # a second one queued from t=109
    clock.advance(1.5)
    # in progress: 3.5 s for the first waiter + 1.5 s for the second
    assert pool.gauge().wait_seconds() == pytest.approx(5.0)
    pool.leave()  # the slot passes on: one waiter left
    clock.advance(0.5)
    pool.leave()  # nobody queued any more
    clock.advance(30.0)
    pool.leave()
    gauge = pool.gauge()
    assert gauge.wait_seconds() == pytest.approx(5.5)
    assert (gauge.waits(), gauge.waiting(), gauge.in_use()) == (2, 0, 0)


def test_a_pool_with_room_never_reads_the_clock() -> None:
    def clock() -> float:
        raise AssertionError("the clock was read without a wait")

    pool = Occupancy("database", size=3, clock=clock)
    for _ in range(3):
        pool.enter()
    for _ in range(3):
        pool.leave()
    assert (pool.waits(), pool.gauge().wait_seconds()) == (0, 0.0)


def test_waits_warn_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    waits = Waits("database", 20, clock)
    with caplog.at_level(logging.WARNING, logger="app.pools"):
        for step in (0.0, 30.0, 29.0, 2.0):  # t=0, 30, 59, 61 (warns at 0 and 61)
            clock.advance(step)
            waits.begin()
            waits.end()
    messages = [r.message for r in caplog.records if "database pool exhausted" in r.message]
    assert (
        messages
        == [
            "database pool exhausted: 1 requests waiting for one of 20 connections "
            "(if this persists while the event-loop lag is low, raise its size)"
        ]
        * 2
    )
    assert waits.total == 4
