"""Admin API dependencies: the shared services and the admin-token guard, as `Annotated` aliases.

Everything comes from `request.app.state.gateway`, set by the application's lifespan
(`app.gateway.Gateway`). The admin API only needs the part of it described by `AdminGateway`,
so tests can mount the router on a small app with just those attributes.

The guard runs on every admin route: with `GATEWAY_ADMIN_TOKEN` unset the whole admin API
answers 404 (it is off, and says nothing about its existence); otherwise the bearer token must
match exactly (constant-time comparison) or the answer is 401 `INVALID_ADMIN_TOKEN`. Failed
attempts are counted per client address (`admin_throttle`, `app.security.throttle`): after a
burst of them the address gets 429 `RATE_LIMITED` with `Retry-After`, before its token is even
compared, so the (>= 32-character) token cannot be guessed at line rate.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Protocol

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admin.reports import Reports
from app.db.storable import storable_text
from app.errors import AuthenticationError, InvalidParameter, NotFound
from app.keys.auth import KeyAuthenticator
from app.keys.service import KeyService
from app.ledger.idempotency import IdempotencyStore
from app.ledger.service import Ledger
from app.security.throttle import FailureThrottle, client_address
from app.settings import Settings

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class AdminGateway(Protocol):
    """What the admin API uses of the process-wide `Gateway`."""

    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> AsyncEngine: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def keys(self) -> KeyService: ...
    @property
    def authenticator(self) -> KeyAuthenticator: ...
    @property
    def idempotency(self) -> IdempotencyStore: ...
    @property
    def admin_throttle(self) -> FailureThrottle: ...


def get_gateway(request: Request) -> AdminGateway:
    gateway: AdminGateway = request.app.state.gateway
    return gateway


async def require_admin(request: Request) -> None:
    # async: FastAPI would run a plain `def` dependency in a worker thread
    gateway = get_gateway(request)
    expected = gateway.settings.admin_token
    if not expected:
        raise NotFound("Not found: no route matches this path.", code="NOT_FOUND")
    address = client_address(request)
    gateway.admin_throttle.check(address)
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        gateway.admin_throttle.record_failure(address)
        raise AuthenticationError(
            "Invalid admin token: send Authorization: Bearer $GATEWAY_ADMIN_TOKEN.",
            code="INVALID_ADMIN_TOKEN",
        )


async def reject_unstorable_parameters(request: Request) -> None:
    """A query or path parameter no text column can hold (a NUL) is a 400 naming it, before
    any SQL runs; on Postgres it would otherwise fail inside the driver."""
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if isinstance(value, str):
            storable_text(value, name)


async def reject_unknown_query(request: Request) -> None:
    """400 for a query parameter the route does not declare: a typo (`?acount_id=`) must not
    silently widen a listing to every account, as an unknown body field is refused too.
    Likewise for one given more than once (`?key_id=a&key_id=b`): every admin query
    parameter is a single value, and silently keeping the last one would filter by a value
    the caller may not have meant."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    query = request.query_params
    unknown = sorted(set(query) - _query_names(route.dependant))
    if unknown:
        raise InvalidParameter(
            f"Unknown query parameter {unknown[0]!r} for this route.", param=unknown[0]
        )
    if len(query) != len(query.multi_items()):
        repeated = sorted(name for name in query if len(query.getlist(name)) > 1)
        raise InvalidParameter(
            f"The query parameter {repeated[0]!r} is given more than once.", param=repeated[0]
        )


def _query_names(dependant: Dependant) -> frozenset[str]:
    # keyed by identity: a route's dependant lives as long as the application
    names = _QUERY_NAMES.get(id(dependant))
    if names is None:
        found = {field.alias for field in dependant.query_params}
        for sub in dependant.dependencies:
            found |= _query_names(sub)
        names = _QUERY_NAMES[id(dependant)] = frozenset(found)
    return names


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def get_ledger(request: Request) -> Ledger:
    return get_gateway(request).ledger


def get_keys(request: Request) -> KeyService:
    return get_gateway(request).keys


def get_authenticator(request: Request) -> KeyAuthenticator:
    return get_gateway(request).authenticator


def get_idempotency(request: Request) -> IdempotencyStore:
    return get_gateway(request).idempotency


def get_reports(request: Request) -> Reports:
    # stateless and cheap: a thin holder of the engine
    return Reports(get_gateway(request).engine)


def get_settings(request: Request) -> Settings:
    return get_gateway(request).settings


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
KeysDep = Annotated[KeyService, Depends(get_keys)]
AuthenticatorDep = Annotated[KeyAuthenticator, Depends(get_authenticator)]
IdempotencyDep = Annotated[IdempotencyStore, Depends(get_idempotency)]
ReportsDep = Annotated[Reports, Depends(get_reports)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"page size, 1..{MAX_PAGE_SIZE}")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]
