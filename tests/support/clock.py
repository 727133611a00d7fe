"""A clock tests step by hand, for code that takes `clock: Callable[[], float]`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeUtcClock:
    """A wall clock (aware UTC datetimes) tests step by hand."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 12, 3, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
