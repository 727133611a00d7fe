"""Pool occupancy: the queueing signal (waiting > 0) and its once-a-minute warning."""

from __future__ import annotations

import logging

import pytest

from app.pools import Occupancy


def test_waiting_counts_callers_beyond_the_pool_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = Occupancy("upstream", size=2)
    with caplog.at_level(logging.WARNING, logger="app.pools"):
        for _ in range(5):
            pool.enter()
    gauge = pool.gauge()
    assert (gauge.size, gauge.in_use(), gauge.waiting()) == (2, 2, 3)
    assert len([r for r in caplog.records if "upstream pool exhausted" in r.message]) == 1
    for _ in range(4):
        pool.leave()
    assert (gauge.in_use(), gauge.waiting()) == (1, 0)
