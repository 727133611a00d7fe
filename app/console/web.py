"""What every console route shares: the `Console` (templates, session codec), the guards, and
rendering.

    request ─▶ SignedIn (valid session cookie, else 303 to the sign-in page)
            ─▶ CsrfChecked on POST (token from the form field or X-CSRF-Token, same-origin)
            ─▶ route: call the SAME service the admin API calls ─▶ render(...) or see_other(...)

Service errors (`GatewayError`: a bad amount, an unknown key, a balance that would go below
zero) are shown to the operator on the page they came from with the service's own message,
not turned into JSON: forms call `attempt(...)`, which returns the error text instead of
raising. Refusals of the console itself (not signed in, CSRF) are `ConsoleRefusal`s rendered
by one handler: a redirect to the sign-in page for pages, a 403 with a short page otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from app.console import formats
from app.console.session import COOKIE_NAME, COOKIE_PATH, Session, SessionCodec, csrf_matches
from app.errors import GatewayError
from app.gateway import Gateway

T = TypeVar("T")
HERE = Path(__file__).parent
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: console pages hold balances and one-time secrets: never cached, never framed
PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
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
    def __init__(self, status_code: int, message: str, *, sign_in: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.sign_in = sign_in


def get_console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def current_session(request: Request) -> Session | None:
    return get_console(request).codec.loads(request.cookies.get(COOKIE_NAME))


def require_signed_in(request: Request) -> Session:
    session = current_session(request)
    if session is None or not session.signed_in:
        expired = request.cookies.get(COOKIE_NAME) is not None
        message = "Your session has expired." if expired else "Sign in to continue."
        raise ConsoleRefusal(401, message, sign_in=True)
    return session


async def check_csrf(request: Request, session: Session) -> None:
    """Same-origin and the session's token, or 403 (called on every state-changing request)."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise ConsoleRefusal(403, "Cross-origin request refused.")
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        value = (await request.form()).get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not csrf_matches(session, presented):
        raise ConsoleRefusal(403, "The form's security token is missing or stale: reload the page.")


async def require_csrf(request: Request) -> Session:
    session = require_signed_in(request)
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
    console = get_console(request)
    context.setdefault("notice", request.query_params.get("notice"))
    return console.templates.TemplateResponse(
        request,
        template,
        {"session": session, "csrf_token": session.csrf if session else "", **context},
        status_code=status_code,
        headers=PAGE_HEADERS,
    )


def see_other(path: str, *, notice: str | None = None) -> RedirectResponse:
    """303 after a successful POST, so a reload does not repeat it."""
    url = path if notice is None else f"{path}{'&' if '?' in path else '?'}notice={quote(notice)}"
    return RedirectResponse(url, status_code=303, headers={"cache-control": "no-store"})


async def attempt(work: Callable[[], Awaitable[T]]) -> tuple[T | None, str | None]:
    """Run a service call; (result, None), or (None, the error's message) on a GatewayError."""
    try:
        return await work(), None
    except GatewayError as exc:
        return None, exc.message


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


async def refusal_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleRefusal)
    if exc.sign_in and request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response: Response = RedirectResponse(
            f"/console/login?next={quote(target)}&reason={quote(exc.message)}", status_code=303
        )
    else:
        response = render(
            request, "refused.html", None, status_code=exc.status_code, message=exc.message
        )
    if exc.sign_in:
        clear_session_cookie(response, request)
    return response
