"""Accounts: list (search, pages), create, credit or adjust, suspend and activate; one account's
page with its balance, ledger (newest first), keys and usage chart.

Each action calls what `POST /admin/v1/...` calls: `Ledger.create_account`,
`CreditService.credit` (the same Idempotency-Key store: the form carries a key drawn when it
was rendered, so a double submit or a reload credits once), `Ledger.update_account` plus the
authenticator's cache invalidation. Amounts are parsed by `app.money.parse_usd`, as in the API.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from app.admin.reports import Reports, RequestFilter
from app.admin.schemas import CreditOut
from app.admin.service import CreditRequest, CreditService
from app.console.charts import bar_chart, bucket_keys, fill_buckets, window_start
from app.console.formats import usd
from app.console.web import CsrfChecked, GatewayDep, SignedIn, attempt, render, see_other
from app.gateway import Gateway
from app.money import MoneyError, parse_usd

router = APIRouter()
PAGE = 20
USAGE_DAYS = 14


def _micros(text: str, *, field: str) -> int:
    try:
        return parse_usd(text.strip() or "0")
    except MoneyError as exc:
        raise ValueError(f"{field}: {exc}") from exc


@router.get("/accounts")
async def list_accounts(
    request: Request,
    session: SignedIn,
    gateway: GatewayDep,
    q: str = "",
    cursor: str | None = None,
) -> Response:
    (page, error) = await attempt(
        lambda: Reports(gateway.engine).list_accounts(
            limit=PAGE, cursor=cursor, search=q.strip() or None
        )
    )
    accounts, next_cursor = page or ([], None)
    return render(
        request,
        "accounts.html",
        session,
        accounts=accounts,
        next_cursor=next_cursor,
        q=q,
        error=error,
    )


@router.post("/accounts")
async def create_account(
    request: Request,
    session: CsrfChecked,
    gateway: GatewayDep,
    name: Annotated[str, Form()] = "",
    balance: Annotated[str, Form()] = "0",
) -> Response:
    try:
        micros = _micros(balance, field="balance")
    except ValueError as exc:
        return await _accounts_error(request, session, gateway, str(exc))
    if not name.strip():
        return await _accounts_error(request, session, gateway, "name: give the account a name")
    record, error = await attempt(
        lambda: gateway.ledger.create_account(name=name.strip(), balance_micros=micros)
    )
    if record is None:
        return await _accounts_error(request, session, gateway, error or "")
    return see_other(f"/console/accounts/{record.id}", notice=f"Account {record.name} created.")


async def _accounts_error(
    request: Request, session: CsrfChecked, gateway: Gateway, error: str
) -> Response:
    accounts, next_cursor = await Reports(gateway.engine).list_accounts(limit=PAGE, cursor=None)
    return render(
        request,
        "accounts.html",
        session,
        status_code=400,
        accounts=accounts,
        next_cursor=next_cursor,
        q="",
        error=error,
    )


@router.get("/accounts/{account_id}")
async def show_account(
    request: Request,
    session: SignedIn,
    gateway: GatewayDep,
    account_id: str,
    cursor: str | None = None,
) -> Response:
    return await _account_page(request, session, gateway, account_id, cursor=cursor)


async def _account_page(
    request: Request,
    session: SignedIn,
    gateway: Gateway,
    account_id: str,
    *,
    cursor: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    account = await gateway.ledger.get_account(account_id)  # 404 JSON for an unknown id
    ledger, next_cursor = await gateway.ledger.ledger_page(account_id, limit=PAGE, cursor=cursor)
    keys, _ = await gateway.keys.list_keys(account_id=account_id, limit=200)
    now = datetime.now(UTC)
    rows = await Reports(gateway.engine).timeline(
        RequestFilter(account_id=account_id, since=window_start("day", now=now, count=USAGE_DAYS)),
        bucket="day",
    )
    days = fill_buckets(rows, bucket_keys("day", now=now, count=USAGE_DAYS))
    return render(
        request,
        "account.html",
        session,
        status_code=status_code,
        account=account,
        ledger=ledger,
        next_cursor=next_cursor,
        keys=keys,
        charts=[
            bar_chart("Requests per day", days, lambda r: r.requests, lambda v: f"{v:.0f}"),
            bar_chart("Spend per day", days, lambda r: r.cost_micros, lambda v: usd(int(v))),
        ],
        models=list(gateway.catalog.models),
        idempotency_key=secrets.token_urlsafe(16),
        error=error,
    )


@router.post("/accounts/{account_id}/credits")
async def credit_account(
    request: Request,
    session: CsrfChecked,
    gateway: GatewayDep,
    account_id: str,
    amount: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
    idempotency_key: Annotated[str, Form()] = "",
) -> Response:
    try:
        micros = _micros(amount, field="amount")
    except ValueError as exc:
        return await _account_page(
            request, session, gateway, account_id, error=str(exc), status_code=400
        )
    credits = CreditService(
        gateway.ledger, gateway.idempotency, ttl_s=gateway.settings.idempotency_ttl_s
    )
    # the admin API's fingerprint is (method, path, body): the console's own path and a
    # canonical body, so a repeat of this form replays and a changed amount is a 409
    body = json.dumps({"amount": micros, "note": note.strip() or None}, sort_keys=True).encode()
    result, error = await attempt(
        lambda: credits.credit(
            CreditRequest(
                account_id=account_id,
                amount_micros=micros,
                note=note.strip() or None,
                method="POST",
                path=request.url.path,
                body=body,
            ),
            idempotency_key=idempotency_key or None,
            render=lambda row: CreditOut.of(row).model_dump_json().encode(),
        )
    )
    if result is None:
        return await _account_page(
            request, session, gateway, account_id, error=error, status_code=400
        )
    balance = json.loads(result.body)["balance"]
    verb = "Already applied" if result.replayed else ("Credited" if micros > 0 else "Adjusted")
    return see_other(
        f"/console/accounts/{account_id}",
        notice=f"{verb} {usd(micros)}; balance ${balance:.6f}".rstrip("0").rstrip("."),
    )


@router.post("/accounts/{account_id}/status")
async def set_status(
    session: CsrfChecked,
    gateway: GatewayDep,
    account_id: str,
    status: Annotated[Literal["active", "suspended"], Form()],
) -> Response:
    record = await gateway.ledger.update_account(account_id, status=status)
    gateway.authenticator.invalidate_all()  # as PATCH /admin/v1/accounts/{id} does
    return see_other(f"/console/accounts/{account_id}", notice=f"Account {record.status}.")
