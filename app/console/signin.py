"""Sign-in and sign-out: the admin token is typed once and exchanged for a session cookie.

The token is compared in constant time, exactly as the admin API's guard compares it, and never
stored: not in the cookie, not in the page, not in the browser's storage. A successful sign-in
issues a NEW session (fresh CSRF token), so nothing chosen before sign-in survives it.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from app.console.web import (
    ConsoleDep,
    CsrfChecked,
    GatewayDep,
    check_csrf,
    clear_session_cookie,
    current_session,
    render,
    see_other,
    set_session_cookie,
)

router = APIRouter()


def safe_next(target: str | None) -> str:
    """Only a console path: never another host (`//evil`, `https://...`)."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console/"


@router.get("/login")
async def login_form(request: Request, console: ConsoleDep) -> Response:
    session = current_session(request)
    if session is not None and session.signed_in:
        return see_other(safe_next(request.query_params.get("next")))
    session = session or console.codec.new(signed_in=False)
    response = render(
        request,
        "login.html",
        session,
        next=safe_next(request.query_params.get("next")),
        reason=request.query_params.get("reason"),
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
        return see_other(f"/console/login?next={safe_next(next)}")
    await check_csrf(request, session)
    expected = gateway.settings.admin_token or ""
    if not expected or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        return render(
            request,
            "login.html",
            session,
            status_code=401,
            next=safe_next(next),
            error="That is not the admin token (GATEWAY_ADMIN_TOKEN).",
        )
    response = see_other(safe_next(next))
    set_session_cookie(response, request, console.codec.new(signed_in=True))
    return response


@router.post("/logout")
async def logout(request: Request, _: CsrfChecked) -> Response:
    response = see_other("/console/login?reason=Signed+out.")
    clear_session_cookie(response, request)
    return response
