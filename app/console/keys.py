"""Keys: list, create (model picker from the catalog, rpm, concurrency, expiry), and revoke,
rotate or delete behind a confirmation page.

The secret of a new or rotated key is rendered once, in the answer to the POST itself (never a
redirect with the secret in a URL), with `Cache-Control: no-store`; nothing can show it again.
Every action is `KeyService`'s, followed by the same authenticator invalidation the admin API
does, so a revoked key stops in this process at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from app.console.web import CsrfChecked, GatewayDep, SignedIn, attempt, render, see_other
from app.keys.repository import KeyRecord

router = APIRouter()
Action = Literal["revoke", "rotate", "delete"]
PAGE = 50
CONFIRM_TEXT: dict[str, str] = {
    "revoke": "Revoke: the key stops working at once and cannot be re-enabled.",
    "rotate": "Rotate: a new secret is issued and the current one stops working at once.",
    "delete": "Delete: the key is removed; its ledger and request history keep its id.",
}


def _optional_int(text: str) -> int | None:
    return int(text) if text.strip() else None


@router.get("/keys")
async def list_keys(
    request: Request,
    session: SignedIn,
    gateway: GatewayDep,
    account_id: str = "",
    cursor: str | None = None,
) -> Response:
    keys, next_cursor = await gateway.keys.list_keys(
        account_id=account_id or None, limit=PAGE, cursor=cursor
    )
    return render(
        request,
        "keys.html",
        session,
        keys=keys,
        next_cursor=next_cursor,
        account_id=account_id,
        now=datetime.now(UTC),
    )


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
) -> Response:
    try:
        limits = (_optional_int(rpm), _optional_int(max_concurrency))
        # <input type="datetime-local"> has no zone: the console states it is UTC
        expiry = (
            datetime.fromisoformat(expires_at).replace(tzinfo=UTC) if expires_at.strip() else None
        )
    except ValueError:
        return render_error(request, session, account_id, "rpm, concurrency or expiry is invalid")
    created, error = await attempt(
        lambda: gateway.keys.create_key(
            account_id=account_id,
            name=name,
            models=[m for m in models or [] if m] or None,
            rpm=limits[0],
            max_concurrency=limits[1],
            expires_at=expiry,
        )
    )
    if created is None:
        return render_error(request, session, account_id, error or "")
    record, secret = created
    return _secret_page(request, session, record, secret, verb="created")


def render_error(request: Request, session: CsrfChecked, account_id: str, error: str) -> Response:
    return render(
        request,
        "refused.html",
        session,
        status_code=400,
        message=f"The key was not created: {error}",
        back=f"/console/accounts/{account_id}",
    )


def _secret_page(
    request: Request, session: CsrfChecked, record: KeyRecord, secret: str, *, verb: str
) -> Response:
    return render(request, "key_secret.html", session, key=record, secret=secret, verb=verb)


@router.get("/keys/{key_id}/{action}")
async def confirm(
    request: Request, session: SignedIn, gateway: GatewayDep, key_id: str, action: Action
) -> Response:
    record = await gateway.keys.get_key(key_id)
    return render(
        request, "key_confirm.html", session, key=record, action=action, text=CONFIRM_TEXT[action]
    )


@router.post("/keys/{key_id}/{action}")
async def act(
    request: Request, session: CsrfChecked, gateway: GatewayDep, key_id: str, action: Action
) -> Response:
    old = await gateway.keys.get_key(key_id)
    back = f"/console/accounts/{old.account_id}"
    if action == "revoke":
        record = await gateway.keys.revoke_key(key_id)
        gateway.authenticator.invalidate(record.key_hash)
        return see_other(back, notice=f"Key {record.name} revoked.")
    if action == "delete":
        record = await gateway.keys.delete_key(key_id)
        gateway.authenticator.invalidate(record.key_hash)
        return see_other(back, notice=f"Key {record.name} deleted.")
    rotated, error = await attempt(lambda: gateway.keys.rotate_key(key_id))
    if rotated is None:
        return see_other(back, notice=error)
    gateway.authenticator.invalidate(old.key_hash)
    return _secret_page(request, session, rotated[0], rotated[1], verb="rotated")
