"""The request log (filters, one request's details) and the model cards.

The log is `Reports.list_requests` / `get_request`, the admin API's `GET /requests`. A
request's details add its ledger rows (charge, refund; `Reports.ledger_for_request`) and its
Idempotency-Key record, with the number of repeats answered from the stored response (a replay
runs nothing and costs nothing, so it has no log row of its own).

The model cards show every catalog model, the hidden ones too, with the reason the catalog
loader recorded (which provider credential is missing).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.admin.reports import Reports, RequestFilter
from app.catalog.parameters import CompiledModel
from app.console.web import ConsoleRefusal, GatewayDep, SignedIn, attempt, render

router = APIRouter()
PAGE = 50
States = Literal["", "pending", "settled", "swept", "unbilled"]


def _time(text: str) -> datetime | None:
    """`<input type="datetime-local">` (no zone, read as UTC), or None."""
    if not text.strip():
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/requests")
async def request_log(
    request: Request,
    session: SignedIn,
    gateway: GatewayDep,
    account_id: str = "",
    key_id: str = "",
    model: str = "",
    state: States = "",
    code: str = "",
    since: str = "",
    until: str = "",
    cursor: str | None = None,
) -> Response:
    status_code = int(code) if code.strip().isdigit() else None
    filters = RequestFilter(
        account_id=account_id or None,
        key_id=key_id or None,
        model=model or None,
        state=state or None,
        status_code=status_code,
        error_code=None if status_code is not None or not code.strip() else code.strip(),
        since=_time(since),
        until=_time(until),
    )
    page, error = await attempt(
        lambda: Reports(gateway.engine).list_requests(filters, limit=PAGE, cursor=cursor)
    )
    records, next_cursor = page or ([], None)
    query = {
        "account_id": account_id,
        "key_id": key_id,
        "model": model,
        "state": state,
        "code": code,
        "since": since,
        "until": until,
    }
    return render(
        request,
        "requests.html",
        session,
        records=records,
        next_cursor=next_cursor,
        cursor=cursor,
        query=query,
        query_string=urlencode({name: value for name, value in query.items() if value}),
        error=error,
        models=sorted({*gateway.catalog.models, *gateway.catalog.hidden}),
    )


@router.get("/requests/{request_id}")
async def request_detail(
    request: Request, session: SignedIn, gateway: GatewayDep, request_id: str
) -> Response:
    reports = Reports(gateway.engine)
    record = await reports.get_request(request_id)
    if record is None:
        raise ConsoleRefusal(404, f"No request with id {request_id!r}.")
    return render(
        request,
        "request.html",
        session,
        record=record,
        entries=await reports.ledger_for_request(record.id),
        idempotency=await reports.idempotency_for_request(record.id),
    )


@router.get("/models")
async def models(request: Request, session: SignedIn, gateway: GatewayDep) -> Response:
    catalog = gateway.catalog
    cards: list[tuple[CompiledModel, str | None]] = [
        (model, None) for model in catalog.models.values()
    ]
    cards += [(hidden.model, hidden.reason) for hidden in catalog.hidden.values()]
    return render(request, "models.html", session, cards=cards)
