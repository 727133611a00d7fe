"""`image-gateway usage` and `image-gateway requests`: what was spent, and the request log."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated

import typer

from app.admin.reports import GroupBy, RequestFilter, RequestRecord, usage_total
from app.admin.schemas import RequestOut, UsageOut
from app.cli.common import (
    Cursor,
    Json,
    Limit,
    cli,
    parse_time,
    print_json,
    print_page,
    print_table,
    run,
    usd,
    when,
)


class GroupChoice(StrEnum):
    model = "model"
    key = "key"
    day = "day"


class StateChoice(StrEnum):
    pending = "pending"
    settled = "settled"
    swept = "swept"
    unbilled = "unbilled"


AccountFilter = Annotated[str | None, typer.Option(help="Only this account.")]
KeyFilter = Annotated[str | None, typer.Option(help="Only this key.")]
ModelFilter = Annotated[str | None, typer.Option(help="Only this model.")]


@cli.command()
def usage(
    account_id: AccountFilter = None,
    key_id: KeyFilter = None,
    model: ModelFilter = None,
    from_: Annotated[str | None, typer.Option("--from", help="Start (inclusive).")] = None,
    to: Annotated[str | None, typer.Option(help="End (exclusive).")] = None,
    group_by: Annotated[GroupChoice | None, typer.Option(help="Group by (days are UTC).")] = None,
    as_json: Json = False,
) -> None:
    """Requests, images delivered and cost (settled requests)."""
    grouping: GroupBy | None = None if group_by is None else group_by.value
    since, until = parse_time(from_, "--from"), parse_time(to, "--to")
    filters = RequestFilter(
        account_id=account_id, key_id=key_id, model=model, since=since, until=until
    )
    rows = run(lambda s: s.reports.usage(filters, group_by=grouping))
    total = usage_total(rows)
    if as_json:
        print_json(UsageOut.build(rows, group_by=grouping, since=since, until=until))
        return
    shown = [*(rows if grouping else []), total]
    print_table(
        [(grouping or "").upper() or "ALL", "REQUESTS", "IMAGES", "COST"],
        [
            [row.group if row is not total else "TOTAL", row.requests, row.images,
             usd(row.cost_micros)]
            for row in shown
        ],
    )  # fmt: skip


@cli.command()
def requests(
    account_id: AccountFilter = None,
    key_id: KeyFilter = None,
    model: ModelFilter = None,
    status: Annotated[
        int | None, typer.Option(min=100, max=599, help="Only this HTTP status.")
    ] = None,
    state: Annotated[StateChoice | None, typer.Option(help="Only this billing state.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    as_json: Json = False,
) -> None:
    """The request log, newest first (the admin API's GET /requests)."""
    filters = RequestFilter(
        account_id=account_id,
        key_id=key_id,
        model=model,
        status_code=status,
        state=None if state is None else state.value,
    )
    records, next_cursor = run(
        lambda s: s.reports.list_requests(filters, limit=limit, cursor=cursor)
    )
    print_page(records, next_cursor, as_json=as_json, out=RequestOut.of, table=_show_requests)


def _show_requests(records: Sequence[RequestRecord]) -> None:
    print_table(
        ["ID", "ACCOUNT", "MODEL", "STATE", "STATUS", "CODE", "IMAGES", "COST", "MS", "CREATED"],
        [[r.id, r.account_id, r.model, r.state, r.status_code, r.error_code, r.images,
          usd(r.cost_micros), r.latency_ms, when(r.created_at)] for r in records],
    )  # fmt: skip
