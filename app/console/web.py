"""What every console route shares: the `Console` (templates, session codec), the guards, and
rendering.

    request ─▶ SignedIn (valid session cookie, else 303 to the sign-in page)
            ─▶ CsrfChecked on POST (token from the form field or X-CSRF-Token, same origin)
            ─▶ route: call the SAME service the admin API calls ─▶ render(...) or see_other(...)

Service errors (`GatewayError`: a bad amount, an unknown key, a balance that would go below
zero) are shown to the operator on the page they came from with the service's own message,
not turned into JSON: forms call `attempt(...)`, which returns the error text instead of
raising. Refusals of the console itself (not signed in, CSRF, an unknown id in a page URL)
are `ConsoleRefusal`s rendered by one handler: a redirect to the sign-in page for a page whose
session is missing or expired, a short HTML page otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError
from starlette.responses import RedirectResponse, Response

from app.console import formats
from app.console.session import (
    COOKIE_NAME,
    COOKIE_PATH,
    FLASH_COOKIE,
    FLASH_TTL_S,
    Session,
    SessionCodec,
    csrf_matches,
)
from app.errors import GatewayError
from app.gateway import Gateway

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
HERE = Path(__file__).parent
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: why the sign-in page is shown: fixed texts chosen by code (a URL cannot inject its own)
SignInReason = Literal["signin", "expired", "signed_out"]
SIGN_IN_REASONS: Final[dict[str, str]] = {
    "signin": "Sign in to continue.",
    "expired": "Your session has expired: sign in again.",
    "signed_out": "You are signed out.",
}
#: console pages hold balances and one-time secrets: never cached, never framed
PAGE_HEADERS: Final = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


@dataclass(slots=True)
class Console:
    """Built once at start-up, at `app.state.console`."""

    codec: SessionCodec
    templates: Jinja2Templates


def build_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(formats.FILTERS)
    templates.env.globals.update(formats.GLOBALS)
    return templates


class ConsoleRefusal(Exception):
    def __init__(
        self, status_code: int, message: str, *, sign_in: SignInReason | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        #: the session is missing or expired: pages redirect to the sign-in form
        self.sign_in = sign_in


def get_console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def current_session(request: Request) -> Session | None:
    return get_console(request).codec.loads(request.cookies.get(COOKIE_NAME))


async def require_signed_in(request: Request) -> Session:
    session = current_session(request)
    if session is None or not session.signed_in:
        # a cookie that no longer verifies is an expired session (or a forged one); a valid
        # anonymous one only carries the sign-in form's CSRF token
        expired = session is None and request.cookies.get(COOKIE_NAME) is not None
        reason: SignInReason = "expired" if expired else "signin"
        raise ConsoleRefusal(401, SIGN_IN_REASONS[reason], sign_in=reason)
    return session


async def check_csrf(request: Request, session: Session) -> None:
    """Same origin and the session's token, or 403 (on every state-changing request).

    SameSite=Strict already keeps the cookie off cross-site requests; the token makes the
    refusal independent of the browser honouring that, and the Origin check refuses a
    cross-origin POST before its body is even read."""
    origin = request.headers.get("origin")
    # behind a proxy that rewrites Host, the host the browser used is in X-Forwarded-Host
    ours = {request.headers.get("host"), request.headers.get("x-forwarded-host")}
    if origin is not None and urlsplit(origin).netloc not in ours:
        raise ConsoleRefusal(403, "Cross-origin request refused.")
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise ConsoleRefusal(403, "Cross-site request refused.")
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not csrf_matches(session, presented):
        raise ConsoleRefusal(403, "The form's security token is missing or stale: reload the page.")


async def require_csrf(request: Request) -> Session:
    session = await require_signed_in(request)
    await check_csrf(request, session)
    return session


SignedIn = Annotated[Session, Depends(require_signed_in)]
CsrfChecked = Annotated[Session, Depends(require_csrf)]
ConsoleDep = Annotated[Console, Depends(get_console)]
GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def render(
    request: Request,
    template: str,
    session: Session | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """A page, with the session's CSRF token and the one-time message of the last action."""
    console = get_console(request)
    flash = request.cookies.get(FLASH_COOKIE)
    context.setdefault("notice", console.codec.load_flash(flash))
    response = console.templates.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "csrf_token": session.csrf if session else "",
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
        headers=PAGE_HEADERS,
    )
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


def see_other(request: Request, path: str, *, notice: str | None = None) -> RedirectResponse:
    """303 after a successful POST, so a reload does not repeat it; `notice` shows once."""
    response = RedirectResponse(path, status_code=303, headers={"cache-control": "no-store"})
    if notice:
        response.set_cookie(
            FLASH_COOKIE,
            get_console(request).codec.dump_flash(notice),
            max_age=FLASH_TTL_S,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


async def attempt(work: Callable[[], Awaitable[T]]) -> tuple[T | None, str | None]:
    """Run a service call; (result, None), or (None, the error's message) on a GatewayError."""
    try:
        return await work(), None
    except GatewayError as exc:
        return None, exc.message


def parse_form(schema: type[M], data: Mapping[str, Any]) -> tuple[M | None, str | None]:
    """A form read through the admin API's own request schema (the same limits and money
    parsing), or the first problem as a sentence for the page."""
    try:
        return schema.model_validate(data), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return None, f"{where}: {first['msg']}" if where else str(first["msg"])


async def or_not_found(work: Awaitable[T]) -> T:
    """A page's subject (`get_account`, `get_key`), or the console's 404 page."""
    try:
        return await work
    except GatewayError as exc:
        if exc.status == 404:
            raise ConsoleRefusal(404, exc.message) from exc
        raise


def set_session_cookie(response: Response, request: Request, session: Session) -> None:
    codec = get_console(request).codec
    response.set_cookie(
        COOKIE_NAME,
        codec.dumps(session),
        max_age=max(1, int(session.expires_at - codec.clock())),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE_NAME,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def sign_in_url(reason: SignInReason, next_path: str | None = None) -> str:
    target = "" if next_path is None else f"&next={quote(next_path)}"
    return f"/console/login?reason={reason}{target}"


async def refusal_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleRefusal)
    if exc.sign_in is not None and request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response: Response = RedirectResponse(
            sign_in_url(exc.sign_in, target), status_code=303, headers={"cache-control": "no-store"}
        )
    else:
        response = render(
            request,
            "refused.html",
            None,
            status_code=exc.status_code,
            message=exc.message,
            sign_in=exc.sign_in is not None,
            not_found=exc.status_code == 404,
        )
    if exc.sign_in is not None:
        clear_session_cookie(response, request)
    return response
