"""Accounts: list (search, pages), create, credit or adjust, suspend and activate; one account's
page with its balance, ledger (newest first), keys and usage chart.

Each action calls what `POST /admin/v1/...` calls, with the form read through the admin API's
own request schema (`AccountCreate`, `CreditCreate`: the same name limits and USD parsing):
`Ledger.create_account`; `CreditService.credit` with the same Idempotency-Key store (the form
carries a key drawn when it was rendered, so a double submit or a reload credits once);
`Ledger.update_account` plus the authenticator's cache invalidation.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from app.admin.reports import Reports, RequestFilter
from app.admin.schemas import AccountCreate, CreditCreate, CreditOut
from app.admin.service import CreditRequest, CreditService
from app.console.charts import bar_chart, bucket_keys, fill_buckets, window_start
from app.console.formats import usd
from app.console.web import (
    CsrfChecked,
    GatewayDep,
    SignedIn,
    attempt,
    or_not_found,
    parse_form,
    render,
    see_other,
)
from app.gateway import Gateway
from app.ledger.records import LedgerRow
from app.money import parse_usd

router = APIRouter()
PAGE = 20
LEDGER_PAGE = 25
USAGE_DAYS = 14


@router.get("/accounts")
async def list_accounts(
    request: Request,
    session: SignedIn,
    gateway: GatewayDep,
    q: str = "",
    cursor: str | None = None,
) -> Response:
    return await _accounts_page(request, session, gateway, q=q, cursor=cursor)


async def _accounts_page(
    request: Request,
    session: SignedIn,
    gateway: Gateway,
    *,
    q: str = "",
    cursor: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    page, list_error = await attempt(
        lambda: Reports(gateway.engine).list_accounts(
            limit=PAGE, cursor=cursor, search=q.strip() or None
        )
    )
    accounts, next_cursor = page or ([], None)
    return render(
        request,
        "accounts.html",
        session,
        status_code=status_code,
        accounts=accounts,
        next_cursor=next_cursor,
        first_page=cursor is None,
        q=q,
        error=error or list_error,
    )


@router.post("/accounts")
async def create_account(
    request: Request,
    session: CsrfChecked,
    gateway: GatewayDep,
    name: Annotated[str, Form()] = "",
    balance: Annotated[str, Form()] = "0",
) -> Response:
    body, error = parse_form(AccountCreate, {"name": name, "balance": balance.strip() or "0"})
    record = None
    if body is not None:
        record, error = await attempt(
            lambda: gateway.ledger.create_account(name=body.name, balance_micros=body.balance)
        )
    if record is None:
        return await _accounts_page(request, session, gateway, error=error, status_code=400)
    return see_other(
        request, f"/console/accounts/{record.id}", notice=f"Account {record.name} created."
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
    account = await or_not_found(gateway.ledger.get_account(account_id))
    page, ledger_error = await attempt(
        lambda: gateway.ledger.ledger_page(account_id, limit=LEDGER_PAGE, cursor=cursor)
    )
    ledger: list[LedgerRow]
    ledger, next_cursor = page or ([], None)
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
        first_page=cursor is None,
        keys=keys,
        now=now,
        charts=[
            bar_chart("Requests per day", days, lambda r: r.requests, lambda v: f"{v:.0f}"),
            bar_chart("Spend per day", days, lambda r: r.cost_micros, lambda v: usd(int(v))),
        ],
        models=[name for name, _ in gateway.catalog.listed(account_id)],
        idempotency_key=secrets.token_urlsafe(16),
        error=error or ledger_error,
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
    body, error = parse_form(CreditCreate, {"amount": amount.strip(), "note": note.strip() or None})
    if body is None:
        return await _account_page(
            request, session, gateway, account_id, error=error, status_code=400
        )
    credits = CreditService(
        gateway.ledger, gateway.idempotency, ttl_s=gateway.settings.idempotency_ttl_s
    )
    # the admin API's fingerprint is (method, path, body): the console's own path and the
    # validated body, so a repeat of this form replays and a changed amount is a 409
    result, error = await attempt(
        lambda: credits.credit(
            CreditRequest(
                account_id=account_id,
                amount_micros=body.amount,
                note=body.note,
                method="POST",
                path=request.url.path,
                body=body.model_dump_json().encode(),
            ),
            idempotency_key=idempotency_key or None,
            render=lambda row: CreditOut.of(row).model_dump_json().encode(),
        )
    )
    if result is None:
        return await _account_page(
            request, session, gateway, account_id, error=error, status_code=400
        )
    credited = CreditOut.model_validate_json(result.body)
    verb = "Already applied" if result.replayed else ("Credited" if body.amount > 0 else "Adjusted")
    return see_other(
        request,
        f"/console/accounts/{account_id}",
        notice=f"{verb} {usd(body.amount)}; the balance is now {usd(parse_usd(credited.balance))}.",
    )


@router.post("/accounts/{account_id}/status")
async def set_status(
    request: Request,
    session: CsrfChecked,
    gateway: GatewayDep,
    account_id: str,
    status: Annotated[Literal["active", "suspended"], Form()],
) -> Response:
    record = await or_not_found(gateway.ledger.update_account(account_id, status=status))
    gateway.authenticator.invalidate_all()  # as PATCH /admin/v1/accounts/{id} does
    return see_other(request, f"/console/accounts/{account_id}", notice=f"Account {record.status}.")
