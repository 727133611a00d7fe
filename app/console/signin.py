"""Sign-in and sign-out: the admin token is typed once and exchanged for a session cookie.

The token is checked exactly as the admin API's guard checks it: constant-time comparison,
and the same per-address failure budget (`Gateway.admin_throttle`), so the sign-in form is no
easier to guess against than `Authorization: Bearer`. It is never stored: not in the cookie,
not in the page, not in the browser's storage (the field is `autocomplete="off"`). A successful
sign-in issues a NEW session (fresh CSRF token), so nothing chosen before sign-in survives it.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from app.console.web import (
    SIGN_IN_REASONS,
    ConsoleDep,
    CsrfChecked,
    GatewayDep,
    check_csrf,
    clear_session_cookie,
    current_session,
    render,
    see_other,
    set_session_cookie,
    sign_in_url,
)
from app.errors import RateLimited
from app.security.throttle import client_address

router = APIRouter()


def safe_next(target: str | None) -> str:
    """Only a console path: never another host (`//evil`, `https://...`, `/console@evil`)."""
    if target and (target == "/console" or target.startswith("/console/")) and "\\" not in target:
        return target
    return "/console/"


@router.get("/login")
async def login_form(request: Request, console: ConsoleDep) -> Response:
    session = current_session(request)
    next_path = safe_next(request.query_params.get("next"))
    if session is not None and session.signed_in:
        return see_other(request, next_path)
    session = session or console.codec.new(signed_in=False)
    response = render(
        request,
        "login.html",
        session,
        next=next_path,
        reason=SIGN_IN_REASONS.get(request.query_params.get("reason") or ""),
    )
    set_session_cookie(response, request, session)
    return response


@router.post("/login")
async def login(
    request: Request,
    console: ConsoleDep,
    gateway: GatewayDep,
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/console/",
) -> Response:
    session = current_session(request)
    if session is None:
        # no cookie (or an expired one): start over with a fresh form
        return see_other(request, sign_in_url("expired", safe_next(next)))
    await check_csrf(request, session)
    address = client_address(request)
    expected = gateway.settings.admin_token or ""
    try:
        gateway.admin_throttle.check(address)
    except RateLimited as exc:
        return render(
            request, "login.html", session, status_code=429, next=safe_next(next), error=exc.message
        )
    if not expected or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        gateway.admin_throttle.record_failure(address)
        return render(
            request,
            "login.html",
            session,
            status_code=401,
            next=safe_next(next),
            error="That is not the admin token (GATEWAY_ADMIN_TOKEN).",
        )
    response = see_other(request, safe_next(next))
    set_session_cookie(response, request, console.codec.new(signed_in=True))
    return response


@router.post("/logout")
async def logout(request: Request, _: CsrfChecked) -> Response:
    response = see_other(request, sign_in_url("signed_out"))
    clear_session_cookie(response, request)
    return response
