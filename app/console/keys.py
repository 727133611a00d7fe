"""Keys: list, create (model picker from the catalog, rpm, concurrency, expiry, budgets), and
revoke, rotate or delete behind a confirmation page.

The form is read through the admin API's `KeyCreate` schema and handed to the same
`KeyService` calls. The secret of a new or rotated key is rendered once, in the answer to the
POST itself (never a redirect with the secret in a URL), with `Cache-Control: no-store`;
nothing can show it again. Every action is followed by the same authenticator invalidation the
admin API does, so a revoked key stops in this process at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from app.admin.schemas import KeyCreate
from app.admin.service import create_key_from
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
from app.keys.repository import KeyRecord

router = APIRouter()
Action = Literal["revoke", "rotate", "delete"]
PAGE = 50
CONFIRM_TEXT: dict[str, str] = {
    "revoke": "The key stops working at once and cannot be enabled again.",
    "rotate": "A new secret is issued; the current one stops working at once.",
    "delete": "The key is removed; the ledger and the request log keep its id.",
}


@router.get("/keys")
async def list_keys(
    request: Request,
    session: SignedIn,
    gateway: GatewayDep,
    account_id: str = "",
    cursor: str | None = None,
) -> Response:
    keys, next_cursor = await gateway.keys.list_keys(
        account_id=account_id.strip() or None, limit=PAGE, cursor=cursor
    )
    return render(
        request,
        "keys.html",
        session,
        keys=keys,
        next_cursor=next_cursor,
        first_page=cursor is None,
        account_id=account_id,
        now=datetime.now(UTC),
    )


def key_form(
    *,
    name: str,
    models: list[str],
    rpm: str,
    max_concurrency: str,
    expires_at: str,
    budgets: dict[str, str],
) -> dict[str, Any]:
    """The form as the admin API's JSON body: blanks are "not set"; the expiry input
    (`datetime-local`, no zone) is UTC, as the page says."""
    return {
        "name": name,
        "models": [model for model in models if model] or None,
        "rpm": rpm.strip() or None,
        "max_concurrency": max_concurrency.strip() or None,
        "expires_at": _utc_input(expires_at),
        "budgets": [
            {"period": period, "amount": amount.strip()}
            for period, amount in budgets.items()
            if amount.strip()
        ]
        or None,
    }


def _utc_input(value: str) -> str | None:
    value = value.strip()
    if not value or value.endswith("Z") or "+" in value[10:]:
        return value or None
    return f"{value}Z"


@router.post("/accounts/{account_id}/keys")
async def create_key(
    request: Request,
    session: CsrfChecked,
    gateway: GatewayDep,
    account_id: str,
    name: Annotated[str, Form()] = "",
    models: Annotated[list[str] | None, Form()] = None,
    rpm: Annotated[str, Form()] = "",
    max_concurrency: Annotated[str, Form()] = "",
    expires_at: Annotated[str, Form()] = "",
    budget_day: Annotated[str, Form()] = "",
    budget_month: Annotated[str, Form()] = "",
    budget_total: Annotated[str, Form()] = "",
) -> Response:
    body, error = parse_form(
        KeyCreate,
        key_form(
            name=name,
            models=models or [],
            rpm=rpm,
            max_concurrency=max_concurrency,
            expires_at=expires_at,
            budgets={"day": budget_day, "month": budget_month, "total": budget_total},
        ),
    )
    created = None
    if body is not None:
        created, error = await attempt(lambda: create_key_from(gateway.keys, account_id, body))
    if created is None:
        return render(
            request,
            "refused.html",
            session,
            status_code=400,
            message=f"The key was not created: {error}",
            back=f"/console/accounts/{account_id}",
        )
    record, secret = created
    return _secret_page(request, session, record, secret, verb="created")


def _secret_page(
    request: Request, session: CsrfChecked, record: KeyRecord, secret: str, *, verb: str
) -> Response:
    return render(request, "key_secret.html", session, key=record, secret=secret, verb=verb)


@router.get("/keys/{key_id}/{action}")
async def confirm(
    request: Request, session: SignedIn, gateway: GatewayDep, key_id: str, action: Action
) -> Response:
    record = await or_not_found(gateway.keys.get_key(key_id))
    return render(
        request, "key_confirm.html", session, key=record, action=action, text=CONFIRM_TEXT[action]
    )


@router.post("/keys/{key_id}/{action}")
async def act(
    request: Request, session: CsrfChecked, gateway: GatewayDep, key_id: str, action: Action
) -> Response:
    old = await or_not_found(gateway.keys.get_key(key_id))
    back = f"/console/accounts/{old.account_id}"
    if action == "revoke":
        record = await gateway.keys.revoke_key(key_id)
        gateway.authenticator.invalidate(record.key_hash)
        return see_other(request, back, notice=f"Key {record.name} revoked.")
    if action == "delete":
        record = await gateway.keys.delete_key(key_id)
        gateway.authenticator.invalidate(record.key_hash)
        return see_other(request, back, notice=f"Key {record.name} deleted.")
    rotated, error = await attempt(lambda: gateway.keys.rotate_key(key_id))
    if rotated is None:
        return see_other(request, back, notice=f"Key {old.name} was not rotated: {error}")
    gateway.authenticator.invalidate(old.key_hash)
    return _secret_page(request, session, rotated[0], rotated[1], verb="rotated")
