"""The overview: traffic, images, spend and error rate over time; top models and accounts;
requests in flight.

Every number comes from the admin API's `Reports` (the request log): the same queries, the same
meaning of "images" and "cost" (settled requests only). "In flight" counts the request log's
`pending` rows: a request holds money from admission until it settles, so this is exactly the
work the gateway has taken on and not finished, across every replica sharing the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.admin.reports import Bucket, Reports, RequestFilter
from app.console.charts import bar_chart, bucket_keys, fill_buckets, window_start
from app.console.formats import usd
from app.console.web import GatewayDep, SignedIn, render

router = APIRouter()

#: the chart windows an operator can pick: (bucket, how many buckets)
WINDOWS: dict[str, tuple[Bucket, int]] = {"24h": ("hour", 24), "14d": ("day", 14)}
TOP = 5


@router.get("/")
async def overview(
    request: Request,
    session: SignedIn,
    gateway: GatewayDep,
    window: Literal["24h", "14d"] = "24h",
) -> Response:
    reports = Reports(gateway.engine)
    bucket, count = WINDOWS[window]
    now = datetime.now(UTC)
    since = window_start(bucket, now=now, count=count)
    in_window = RequestFilter(since=since)
    timeline = fill_buckets(
        await reports.timeline(in_window, bucket=bucket),
        bucket_keys(bucket, now=now, count=count),
    )
    charts = [
        bar_chart("Requests", timeline, lambda r: r.requests, lambda v: f"{v:.0f}"),
        bar_chart("Images", timeline, lambda r: r.images, lambda v: f"{v:.0f}"),
        bar_chart("Spend", timeline, lambda r: r.cost_micros, lambda v: usd(int(v))),
        bar_chart(
            "Error rate",
            timeline,
            lambda r: 0 if r.requests == 0 else 100 * r.errors / r.requests,
            lambda v: f"{v:.1f}%",
        ),
    ]
    by_model = await reports.usage(in_window, group_by="model")
    by_account = await reports.usage(in_window, group_by="account")
    pending = await reports.usage(RequestFilter(state="pending"), group_by=None)
    top_accounts = sorted(by_account, key=lambda r: (-r.cost_micros, -r.requests))[:TOP]
    accounts = {
        row.group: await gateway.ledger.get_account(row.group)
        for row in top_accounts
        if row.group is not None
    }
    return render(
        request,
        "overview.html",
        session,
        window=window,
        windows=list(WINDOWS),
        charts=charts,
        totals={
            "requests": sum(r.requests for r in timeline),
            "errors": sum(r.errors for r in timeline),
            "images": sum(r.images for r in timeline),
            "cost_micros": sum(r.cost_micros for r in timeline),
        },
        in_flight=pending[0].requests if pending else 0,
        top_models=sorted(by_model, key=lambda r: (-r.cost_micros, -r.requests))[:TOP],
        top_accounts=top_accounts,
        account_names={key: value.name for key, value in accounts.items()},
    )
