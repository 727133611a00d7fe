"""The shared polling loop."""

from __future__ import annotations

import itertools
import time

import pytest

from app.adapters.polling import poll
from app.errors import UpstreamError

pytestmark = pytest.mark.anyio


async def test_returns_the_first_finished_value_with_backoff() -> None:
    calls: list[float] = []

    async def check() -> str | None:
        calls.append(time.perf_counter())
        return "done" if len(calls) == 4 else None

    assert await poll(check, interval_s=0.01, max_interval_s=0.02) == "done"
    assert len(calls) == 4
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.009 and gaps[-1] >= 0.019  # grew to the cap


async def test_a_failed_job_raises_through() -> None:
    async def check() -> None:
        raise UpstreamError("job failed")

    with pytest.raises(UpstreamError, match="job failed"):
        await poll(check, interval_s=0.01)
