"""Small server-drawn SVG bar charts (no chart library, no script: they print and read offline).

    timeline rows ─▶ fill_buckets (every hour/day in the window, zeros where nothing ran)
                  ─▶ bar_chart(series) ─▶ BarChart (bars in a 0..100 x 0..40 viewBox)

The template draws each `Bar` as a `<rect>` with a `<title>` (hover and screen readers) and
prints the same numbers in a table beside it, so the chart is never the only way to read them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.admin.reports import Bucket, TimelineRow

WIDTH = 100.0
HEIGHT = 40.0


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value_text: str


@dataclass(frozen=True, slots=True)
class BarChart:
    title: str
    bars: list[Bar]
    peak_text: str
    first_label: str
    last_label: str

    @property
    def empty(self) -> bool:
        return all(bar.height == 0 for bar in self.bars)


def bucket_keys(bucket: Bucket, *, now: datetime, count: int) -> list[str]:
    """The last `count` bucket keys up to `now`, oldest first, formatted as `Reports` does."""
    now = now.astimezone(UTC)
    if bucket == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        return [
            (start - timedelta(hours=i)).strftime("%Y-%m-%dT%H") for i in reversed(range(count))
        ]
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return [(day - timedelta(days=i)).strftime("%Y-%m-%d") for i in reversed(range(count))]


def window_start(bucket: Bucket, *, now: datetime, count: int) -> datetime:
    first = bucket_keys(bucket, now=now, count=count)[0]
    if bucket == "hour":
        return datetime.strptime(first, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    return datetime.strptime(first, "%Y-%m-%d").replace(tzinfo=UTC)


def fill_buckets(rows: Sequence[TimelineRow], keys: Sequence[str]) -> list[TimelineRow]:
    by_key = {row.bucket: row for row in rows}
    return [by_key.get(key) or TimelineRow(key, 0, 0, 0, 0) for key in keys]


def bar_chart(
    title: str,
    rows: Sequence[TimelineRow],
    value: Callable[[TimelineRow], float],
    text: Callable[[float], str],
) -> BarChart:
    values = [value(row) for row in rows]
    peak = max(values, default=0.0)
    slot = WIDTH / max(1, len(rows))
    bars = []
    for index, (row, amount) in enumerate(zip(rows, values, strict=True)):
        height = 0.0 if peak <= 0 else HEIGHT * amount / peak
        bars.append(
            Bar(
                x=round(index * slot + slot * 0.1, 3),
                y=round(HEIGHT - height, 3),
                width=round(slot * 0.8, 3),
                height=round(height, 3),
                label=row.bucket,
                value_text=text(amount),
            )
        )
    return BarChart(
        title=title,
        bars=bars,
        peak_text=text(peak),
        first_label=rows[0].bucket if rows else "",
        last_label=rows[-1].bucket if rows else "",
    )
